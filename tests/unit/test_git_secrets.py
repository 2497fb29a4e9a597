"""The Git adapter's handling of credentials and git's messages, without a server.

Secrets must never reach argv, a URL git sees, an error or a repr; git's failures must
come back as errors that say what to fix and whether retrying can help.
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path

import pytest

from reconciler.adapters import git
from reconciler.adapters.git import auth, mirror, runner
from reconciler.errors import GitError, PushRejected


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pw@host/r.git", "https://user:***@host/r.git"),
        ("https://ghp_TOKEN@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("ssh://git@host:22/r.git", "ssh://git@host:22/r.git"),
        ("fatal: unable to access 'http://u:p%40ss@h:8080/x/': 401", "fatal: unable to access 'http://u:***@h:8080/x/': 401"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://host/r.git", "https://host/r.git"),
    ],
)  # fmt: skip
def test_redact_hides_passwords_and_http_tokens_only(text: str, shown: str) -> None:
    assert git.redact(text) == shown


def test_credentials_in_a_url_move_into_auth() -> None:
    url, auth = git.split_userinfo("https://bot:p%40ss@git.example:8443/org/config.git")
    assert url == "https://git.example:8443/org/config.git"
    assert auth == git.GitAuth.basic("bot", "p@ss")
    url, auth = git.split_userinfo("https://TOKEN123@git.example/config.git")
    assert url == "https://git.example/config.git"
    assert auth is not None
    assert auth.password == "TOKEN123"
    assert git.split_userinfo("ssh://git@host/r.git") == ("ssh://git@host/r.git", None)


def test_password_is_not_in_repr() -> None:
    auth = git.GitAuth.basic("bot", "hunter2-secret")
    assert "hunter2-secret" not in repr(auth)
    assert "hunter2-secret" not in str(auth)


def test_http_credentials_go_in_an_origin_scoped_header_in_the_environment() -> None:
    env = auth._git_env("https://git.example:8443/org/r.git", git.GitAuth.basic("bot", "pw"), {})
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_COUNT"] == "1"
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example:8443/.extraHeader"
    expected = base64.b64encode(b"bot:pw").decode()
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {expected}"
    # An outer GIT_CONFIG_COUNT is kept, ours is appended.
    outer = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "a.b", "GIT_CONFIG_VALUE_0": "c"}
    env = auth._git_env("https://h/r.git", git.GitAuth.token("t"), outer)
    assert (env["GIT_CONFIG_COUNT"], env["GIT_CONFIG_KEY_0"]) == ("2", "a.b")
    assert env["GIT_CONFIG_KEY_1"] == "http.https://h/.extraHeader"
    # Never sent over plain SSH or git://.
    assert "GIT_CONFIG_COUNT" not in auth._git_env("git://h/r.git", git.GitAuth.token("t"), {})


def test_ssh_key_and_known_hosts_are_quoted_into_the_ssh_command(tmp_path: Path) -> None:
    base = tmp_path / "dir with space"
    base.mkdir()
    key = base / "deploy key"
    key.write_text("k")
    env = auth._git_env("ssh://git@h/r.git", git.GitAuth.ssh(key, known_hosts=base / "kh"), {})
    argv = shlex.split(env["GIT_SSH_COMMAND"])
    assert argv[:3] == ["ssh", "-i", str(key)]
    assert "StrictHostKeyChecking=yes" in argv
    assert f"UserKnownHostsFile={base / 'kh'}" in argv
    assert "BatchMode=yes" in argv
    env = auth._git_env("git@h:r.git", git.GitAuth.ssh(key), {})
    assert "StrictHostKeyChecking=accept-new" in shlex.split(env["GIT_SSH_COMMAND"])
    # No key: the user's ssh, but it may never prompt.
    assert auth._git_env("git@h:r.git", None, {})["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"


@pytest.mark.parametrize(
    ("stderr", "says", "transient"),
    [
        ("fatal: Could not resolve host: git.example", "Could not resolve host", True),
        ("fatal: unable to access 'https://h/r/': Failed to connect to h port 443: Connection refused", "Connection refused", True),
        ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.", "refused the SSH key", False),
        ("Host key verification failed.\nfatal: Could not read from remote repository.", "known_hosts", False),
        ("remote: Repository not found.\nfatal: repository 'https://h/x/' not found", "check the repository URL", False),
        ("fatal: Authentication failed for 'https://h/r.git/'", "check the username", False),
    ],
)  # fmt: skip
def test_git_failures_are_explained(stderr: str, says: str, transient: bool) -> None:
    detail, retry = runner._explain(stderr, [])
    assert says in detail
    assert retry is transient


def test_explained_errors_never_echo_a_secret() -> None:
    stderr = "fatal: unable to access 'https://bot:s3cret@h/': The requested URL returned error: 500\nAuthorization: Basic czNjcmV0"
    detail, _ = runner._explain(stderr, ["s3cret", "czNjcmV0"])
    assert "s3cret" not in detail
    assert "czNjcmV0" not in detail


def test_refused_credentials_are_named_as_such() -> None:
    stderr = "fatal: could not read Username for 'https://h': terminal prompts disabled"
    detail, retry = runner._explain(stderr, ["pw"])
    assert "refused the credentials" in detail
    assert not retry
    detail, _ = runner._explain(stderr, [])
    assert "wants credentials" in detail


@pytest.mark.parametrize(
    ("summary", "kind", "says"),
    [
        ("[rejected] (fetch first)", PushRejected, "moved on"),
        ("[rejected] (non-fast-forward)", PushRejected, "moved on"),
        ("[remote rejected] (cannot lock ref 'refs/heads/main': is at 1 but expected 2)", PushRejected, "moved on"),
        ("[remote rejected] (branch is currently checked out)", GitError, "bare repository"),
        ("[remote rejected] (pre-receive hook declined)", GitError, "push rights"),
    ],
)  # fmt: skip
def test_push_rejections_are_told_apart(summary: str, kind: type[GitError], says: str) -> None:
    err = mirror._rejection("https://h/r.git", "main", summary)
    assert type(err) is kind
    assert says in str(err)
    if kind is GitError:
        assert not err.transient


def test_porcelain_push_status_is_read_for_our_ref() -> None:
    out = "To h\n!\tabc:refs/heads/main\t[rejected] (fetch first)\nDone\n"
    assert mirror._push_status(out, "refs/heads/main") == ("!", "[rejected] (fetch first)")
    assert mirror._push_status("To h\nDone\n", "refs/heads/main") is None


@pytest.mark.parametrize("branch", ["", "-x", "a..b", "a b", "a:b", "x.lock", "a/", "a~1", "@{u}"])
def test_bad_branch_names_are_refused_before_git_runs(branch: str) -> None:
    with pytest.raises(GitError, match="not a valid branch name"):
        git.remote_head("/nonexistent", branch)
