"""Every refusal of the session routes: exact status, code and details, and no side effect."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.conftest import output


def session_count(sessions) -> int:
    return len(sessions.request("GET", "/api/v1/sessions").json())


def launch(sessions, **body):
    return sessions.request("POST", "/api/v1/sessions", body)


def base(sessions, **fields):
    return {"projectRoot": str(sessions.project), "harness": "shell", "prompt": "true", **fields}


@pytest.mark.parametrize("fields, message", [
    ({"projectRoot": None}, "request body requires string field `projectRoot`"),
    ({"projectRoot": "   "}, "request body requires string field `projectRoot`"),
    ({"harness": None}, "request body requires string field `harness`"),
    ({"prompt": "  "}, "request body requires string field `prompt`"),
    ({"launchMode": "batch"}, "launchMode must be `interactive`, `nonInteractive`, or `stream`, got `batch`"),
])
def test_launch_field_errors_leave_no_row(sessions, fields, message):
    body = {k: v for k, v in base(sessions, **fields).items() if v is not None}
    response = launch(sessions, **body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["message"] == message
    assert session_count(sessions) == 0


def test_unknown_harness_names_the_configured_ones(sessions):
    response = launch(sessions, **base(sessions, harness="nope"))
    error = response.json()["error"]
    assert response.status == 400 and error["code"] == "invalid_request"
    assert error["message"].startswith("unsupported harness `nope`. Configured harnesses: codex, claude, coven-code, copilot, shell.")


def test_malformed_json_and_non_object_bodies(sessions):
    raw = sessions.request("POST", "/api/v1/sessions", "{not json")
    assert raw.status == 400 and raw.json()["error"]["message"] == "failed to parse request body"
    array = sessions.request("POST", "/api/v1/sessions", [1, 2])
    assert array.status == 400 and array.json()["error"]["code"] == "invalid_request"
    assert session_count(sessions) == 0


def test_cwd_outside_the_root_is_the_seed_error(sessions, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    response = launch(sessions, **base(sessions, cwd=str(outside)))
    assert response.status == 400
    assert response.json()["error"] == {
        "code": "session.cwd_outside_root",
        "message": "cwd must canonicalize inside project root",
        "details": {"projectRoot": str(sessions.project.resolve()), "cwd": str(outside.resolve())},
    }
    os.symlink(outside, sessions.project / "escape")
    sneaky = launch(sessions, **base(sessions, cwd="escape"))
    assert sneaky.json()["error"]["code"] == "session.cwd_outside_root"
    dotdot = launch(sessions, **base(sessions, cwd="../elsewhere"))
    assert dotdot.json()["error"]["code"] == "session.cwd_outside_root"
    assert session_count(sessions) == 0


@pytest.mark.parametrize("field", ["projectRoot", "cwd"])
def test_missing_or_non_directory_paths_name_the_field(sessions, field):
    (sessions.project / "file").write_text("x")
    for value in ("does-not-exist", "file"):
        path = str(sessions.project / value) if field == "projectRoot" else value
        response = launch(sessions, **base(sessions, **{field: path}))
        assert response.status == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_request" and error["details"]["field"] == field
    assert session_count(sessions) == 0


@pytest.mark.parametrize("field", ["executionBinding", "requestAdoption"])
def test_psyche_binding_is_unsupported(sessions, field):
    response = launch(sessions, **base(sessions, **{field: {"x": 1}}))
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "execution_binding_unsupported" and error["details"] == {"fields": [field]}
    assert session_count(sessions) == 0


def test_launch_policy_and_familiars_are_refused(sessions):
    policy = launch(sessions, **base(sessions, launchPolicy={"approval": "never"}))
    assert policy.status == 400 and policy.json()["error"]["code"] == "invalid_request"
    familiar = launch(sessions, **base(sessions, familiarId="morgana"))
    assert familiar.status == 400 and familiar.json()["error"] == {
        "code": "unknown_familiar", "message": "unknown familiar `morgana`", "details": {"familiarId": "morgana"},
    }
    assert session_count(sessions) == 0


@pytest.mark.parametrize("rows", [0, 1001, "24", 2.5, True])
def test_bad_terminal_sizes(sessions, rows):
    response = launch(sessions, **base(sessions, rows=rows))
    assert response.status == 400 and response.json()["error"]["details"]["field"] == "rows"
    assert session_count(sessions) == 0


def test_missing_executable_is_launch_failed_with_a_failed_row(sessions, tmp_path):
    manifest = tmp_path / "ghost.json"
    manifest.write_text(json.dumps({"adapters": [{
        "id": "ghost", "label": "Ghost", "executable": "definitely-not-installed-anywhere",
        "interactive_prompt_prefix_args": [], "non_interactive_prompt_prefix_args": [], "install_hint": "none",
    }]}))
    daemon = sessions.daemon
    daemon.stop()
    from tests.daemon import Daemon

    again = Daemon(home=daemon.home, env={"COVEN_HARNESS_ADAPTER_MANIFEST": str(manifest)}).start()
    try:
        response = again.request("POST", "/api/v1/sessions", {"projectRoot": str(sessions.project),
                                                              "harness": "ghost", "prompt": "hi"})
        assert response.status == 500
        error = response.json()["error"]
        assert error["code"] == "launch_failed"
        assert error["message"] == "failed to spawn harness `definitely-not-installed-anywhere`"
        row = again.request("GET", f"/api/v1/sessions/{error['details']['sessionId']}").json()
        assert row["status"] == "failed" and row["exit_code"] is None
        assert again.request("GET", f"/api/v1/events?sessionId={row['id']}").json()["events"] == []
    finally:
        again.close()


def test_stream_mode_is_launch_failed(sessions):
    response = launch(sessions, **base(sessions, launchMode="stream"))
    assert response.status == 500
    error = response.json()["error"]
    assert error["code"] == "launch_failed" and "stream-mode" in error["message"]
    assert sessions.record(error["details"]["sessionId"])["status"] == "failed"


def test_input_resize_kill_on_unknown_and_finished_sessions(sessions):
    for action, body in (("input", {"data": "x"}), ("resize", {"rows": 10, "cols": 10}), ("kill", None)):
        unknown = sessions.request("POST", f"/api/v1/sessions/nope/{action}", body)
        assert unknown.status == 404 and unknown.json()["error"] == {
            "code": "session_not_found", "message": "Session was not found.", "details": {"sessionId": "nope"},
        }
    sid = sessions.launch("true")["id"]
    sessions.until_exit(sid)
    for action, body in (("input", {"data": "x"}), ("resize", {"rows": 10, "cols": 10}), ("kill", None)):
        done = sessions.request("POST", f"/api/v1/sessions/{sid}/{action}", body)
        assert done.status == 409 and done.json()["error"]["code"] == "session_not_live"
        assert done.json()["error"]["details"] == {"sessionId": sid}


def test_bad_input_bodies_are_refused_and_write_nothing(sessions):
    sid = sessions.launch("cat")["id"]
    cases = [
        ("{oops", 400, "invalid_request"),
        ({"text": "x"}, 400, "invalid_request"),
        ({"data": 5}, 400, "invalid_request"),
        ({"data": "x", "executionBinding": {}}, 400, "execution_binding_unsupported"),
        ({"data": "x" * (2 * 1024 * 1024)}, 413, "input_too_large"),
    ]
    for body, status, code in cases:
        response = sessions.request("POST", f"/api/v1/sessions/{sid}/input", body)
        assert response.status == status, response.body
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["details"]["sessionId"] == sid if code != "execution_binding_unsupported" else True
    sessions.send(sid, "")
    sessions.send(sid, "only this\r")
    events = sessions.until_output(sid, "only this")
    assert [json.loads(e["payload_json"]) for e in events if e["kind"] == "input"] == [{"data": ""}, {"data": "only this\r"}]
    assert "x" not in output(events).replace("only this", "")


def test_bad_resize_bodies(sessions):
    sid = sessions.launch("cat")["id"]
    for body in ({"rows": 10}, {"rows": "10", "cols": 10}, {"rows": 0, "cols": 10}, {"rows": 10, "cols": 1001}):
        response = sessions.request("POST", f"/api/v1/sessions/{sid}/resize", body)
        assert response.status == 400 and response.json()["error"]["code"] == "invalid_request"
    events = sessions.page(sid)["events"]
    assert [e for e in events if e["kind"] == "resize"] == []


def test_post_to_a_session_without_an_action_is_405(sessions):
    response = sessions.request("POST", "/api/v1/sessions/some-id")
    assert response.status == 405 and response.header("Allow") == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"
