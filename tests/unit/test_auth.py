"""Credential lookup: the standard auth file locations and shapes, and pull secrets.

Files are real files in a tmp dir; the environment and home directory are passed in,
so the machine's own auth files never leak into a test.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from reconciler.adapters.registry import credentials as auth
from reconciler.adapters.registry.credentials import Credentials
from reconciler.errors import ConfigError

SECRET = "pa55-Very-Secret"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_json(path: Path, auths: dict[str, object], **extra: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # containers/image writes tab-indented JSON, which YAML parsers refuse.
    path.write_text(json.dumps({"auths": auths, **extra}, indent="\t"))
    return path


def user(creds: Credentials, host: str, repository: str | None = None) -> str | None:
    cred = creds.lookup(host, repository)
    return cred.username if cred else None


def entry(user: str, password: str = SECRET) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def discover(home: Path, **env: str) -> Credentials:
    return Credentials.discover(env={"HOME": str(home), **env}, home=str(home), uid=4242)


# --- where ---------------------------------------------------------------------------------


def test_default_chain_order_follows_containers_image(home: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert auth.default_auth_files(env={"XDG_RUNTIME_DIR": str(run)}, home=str(home)) == [
        f"{run}/containers/auth.json",
        f"{home}/.config/containers/auth.json",
        f"{home}/.docker/config.json",
    ]
    # Root without a session (the reconciler in a container) uses /run/containers/UID.
    assert (
        auth.default_auth_files(env={}, home=str(home), uid=0)[0] == "/run/containers/0/auth.json"
    )
    # XDG_CONFIG_HOME and DOCKER_CONFIG move the second and third file.
    env = {"XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dock", "XDG_RUNTIME_DIR": "/r"}
    assert auth.default_auth_files(env=env, home=str(home))[1:] == [
        "/cfg/containers/auth.json",
        "/dock/config.json",
    ]


@pytest.mark.parametrize("where", ["runtime", "config", "docker"])
def test_each_default_location_is_read(home: Path, tmp_path: Path, where: str) -> None:
    run = tmp_path / "run"
    path = {
        "runtime": run / "containers/auth.json",
        "config": home / ".config/containers/auth.json",
        "docker": home / ".docker/config.json",
    }[where]
    auth_json(path, {"reg.example:5000": entry(where)})
    cred = discover(home, XDG_RUNTIME_DIR=str(run)).lookup("reg.example:5000")
    assert cred is not None
    assert (cred.username, cred.password, cred.source) == (where, SECRET, str(path))


def test_first_file_with_an_entry_wins(home: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    auth_json(run / "containers/auth.json", {"other.example": entry("runtime")})
    auth_json(home / ".config/containers/auth.json", {"reg.example": entry("config")})
    auth_json(home / ".docker/config.json", {"reg.example": entry("docker")})
    creds = discover(home, XDG_RUNTIME_DIR=str(run))
    assert user(creds, "reg.example") == "config"
    assert user(creds, "other.example") == "runtime"
    assert creds.lookup("nowhere.example") is None


def test_registry_auth_file_replaces_the_chain(home: Path, tmp_path: Path) -> None:
    # As with skopeo/podman: a user-chosen file is the only one consulted.
    auth_json(home / ".docker/config.json", {"reg.example": entry("docker")})
    chosen = auth_json(tmp_path / "chosen.json", {"chosen.example": entry("chosen")})
    creds = discover(home, REGISTRY_AUTH_FILE=str(chosen))
    assert creds.checked == (str(chosen),)
    assert user(creds, "chosen.example") == "chosen"
    assert creds.lookup("reg.example") is None


def test_explicit_files_are_read_in_order_and_must_exist(tmp_path: Path) -> None:
    a = auth_json(tmp_path / "a.json", {"reg.example": entry("a")})
    b = auth_json(tmp_path / "b.json", {"reg.example": entry("b"), "other.example": entry("b")})
    creds = Credentials.discover([a, b])
    assert user(creds, "reg.example") == "a"
    assert user(creds, "other.example") == "b"
    with pytest.raises(
        ConfigError, match=r"missing\.json: auth file not found; check the --authfile"
    ):
        Credentials.discover([tmp_path / "missing.json"])


# --- keys and entries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("reg.example", "reg.example"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000/v1/", "127.0.0.1:5000"),
        ("https://index.docker.io/v1/", "docker.io"),  # what `docker login` writes
        ("index.docker.io", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("docker.io", "registry-1.docker.io"),
    ],
)
def test_key_spellings_match_the_host(tmp_path: Path, key: str, host: str) -> None:
    creds = Credentials.discover([auth_json(tmp_path / "a.json", {key: entry("u")})])
    cred = creds.lookup(host)
    assert cred is not None
    assert cred.key == key


def test_namespace_keys_most_specific_wins(tmp_path: Path) -> None:
    creds = Credentials.discover(
        [
            auth_json(
                tmp_path / "a.json",
                {
                    "quay.io": entry("host"),
                    "quay.io/org": entry("org"),
                    "quay.io/org/app": entry("app"),
                },
            )
        ]
    )
    assert user(creds, "quay.io", "org/app") == "app"
    assert user(creds, "quay.io", "org/other") == "org"
    assert user(creds, "quay.io", "elsewhere/x") == "host"
    assert user(creds, "quay.io") == "host"


def test_entry_shapes(tmp_path: Path) -> None:
    path = auth_json(
        tmp_path / "a.json",
        {
            "a.example": {"auth": b64(f"alice:{SECRET}:with:colons")},
            "b.example": {"username": "bob", "password": SECRET},
            "c.example": {"auth": b64("<token>:"), "identitytoken": "refresh-xyz"},
            "d.example": {},  # Docker's marker for a credential helper: skipped
        },
        credHelpers={"d.example": "secretservice"},
    )
    creds = Credentials.discover([path])
    a, b, c = (creds.lookup(h) for h in ("a.example", "b.example", "c.example"))
    assert a is not None
    assert (a.username, a.password) == ("alice", f"{SECRET}:with:colons")
    assert b is not None
    assert (b.username, b.password) == ("bob", SECRET)
    assert c is not None
    assert c.identity_token == "refresh-xyz"
    assert creds.lookup("d.example") is None
    assert creds.notes_for("d.example") == [
        f"credential helper 'secretservice' for d.example in {path} is not run"
    ]


def test_docker_config_without_auths_is_fine_in_the_chain(home: Path) -> None:
    cfg = home / ".docker/config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('{"credsStore": "desktop", "currentContext": "default"}')
    assert discover(home).lookup("reg.example") is None


def test_legacy_dockercfg_shape(tmp_path: Path) -> None:
    path = tmp_path / ".dockercfg"
    path.write_text(json.dumps({"https://reg.example/v1/": entry("legacy")}))
    assert user(Credentials.discover([path]), "reg.example") == "legacy"


# --- Kubernetes pull secrets ---------------------------------------------------------------


def dockerconfigjson(host: str, user: str) -> str:
    return json.dumps(
        {"auths": {host: {"username": user, "password": SECRET, "auth": b64(f"{user}:{SECRET}")}}}
    )


@pytest.mark.parametrize(
    "shape", ["yaml-data", "json-data", "yaml-stringData", "bare", "dockercfg"]
)
def test_pull_secret_shapes(tmp_path: Path, shape: str) -> None:
    host = "registry.example:5000"
    secret: dict[str, object] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pull-secret", "namespace": "reconciler"},
        "type": "kubernetes.io/dockerconfigjson",
    }
    if shape in ("yaml-data", "json-data"):
        secret["data"] = {".dockerconfigjson": b64(dockerconfigjson(host, "k8s"))}
    elif shape == "yaml-stringData":
        secret["stringData"] = {".dockerconfigjson": dockerconfigjson(host, "k8s")}
    elif shape == "dockercfg":
        secret["type"] = "kubernetes.io/dockercfg"
        secret["data"] = {".dockercfg": b64(json.dumps({host: entry("k8s")}))}
    path = tmp_path / "secret"
    if shape == "bare":
        path.write_text(dockerconfigjson(host, "k8s"))
    elif shape == "json-data":
        path.write_text(json.dumps(secret))
    else:
        path.write_text(yaml.safe_dump(secret))
    cred = Credentials.discover([path]).lookup(host)
    assert cred is not None
    assert (cred.username, cred.password) == ("k8s", SECRET)


def test_secret_of_another_type_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": "x"},
                "data": {"password": b64(SECRET)},
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        Credentials.discover([path])
    msg = str(info.value)
    assert "is a Secret of type 'Opaque', not a pull secret" in msg
    assert "kubectl create secret docker-registry" in msg
    assert SECRET not in msg
    assert b64(SECRET) not in msg


# --- secrets stay secret -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            f'{{"auths": {{"r.example": {{"auth": "{SECRET}!!"}}}}}}',
            "auths['r.example'].auth is not base64",
        ),
        (
            f'{{"auths": {{"r.example": {{"auth": "{b64(SECRET)}"}}}}}}',
            "has no ':' between user and password",
        ),
        (f'{{"auths": {{"r.example": "{SECRET}"}}}}', "auths['r.example'] is not an object"),
        (f'{{"auths": [1, "{SECRET}"]}}', "'auths' is not an object"),
        (f'{{"auths": {{"r.example": "{SECRET}"', "is neither JSON nor YAML"),
        (f'["{SECRET}"]', "is not a JSON object"),
        (f'{{"password": "{SECRET}"}}', "has no 'auths' object"),
    ],
)
def test_bad_files_name_the_file_never_the_secret(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Credentials.discover([path])
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    assert problem in msg
    assert SECRET not in msg
    assert b64(SECRET) not in msg


def test_reprs_show_where_not_what(tmp_path: Path) -> None:
    path = auth_json(
        tmp_path / "a.json",
        {"reg.example": {"username": "u", "password": SECRET, "identitytoken": SECRET}},
    )
    creds = Credentials.discover([path])
    cred = creds.lookup("reg.example")
    assert cred is not None
    for text in (repr(cred), str(cred), cred.describe(), repr(creds)):
        assert SECRET not in text
    assert repr(cred) == f"Credential(source={str(path)!r}, key='reg.example')"


def test_in_code_credentials(tmp_path: Path) -> None:
    creds = Credentials.from_mapping({"https://index.docker.io/v1/": ("u", SECRET)})
    cred = creds.lookup("docker.io")
    assert cred is not None
    assert (cred.username, cred.password, cred.source) == (
        "u",
        SECRET,
        "<given>",
    )
