"""Harness adapters: the argv table and model rules of contract §9, manifests, recipes, lookup."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from coven.config import Config
from coven.errors import ApiError
from coven.sessions.harness import RECIPES, Adapter, HarnessRegistry, UnsafeModel

REPO = Path(__file__).resolve().parents[2]
P = "fix the -v bug; don't `rm` it"


def make_registry(tmp_path: Path, **environ: str) -> HarnessRegistry:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return HarnessRegistry(Config.build(environ, home=str(home)))


def write_manifest(path: Path, *entries: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"adapters": list(entries)}))
    return path


def entry(adapter_id: str = "mine", **fields: Any) -> dict[str, Any]:
    return {
        "id": adapter_id,
        "label": "Mine",
        "executable": "mine",
        "interactive_prompt_prefix_args": [],
        "non_interactive_prompt_prefix_args": ["--batch"],
        "install_hint": "install mine",
        **fields,
    }


def install_recipes(tmp_path: Path, *ids: str) -> None:
    adapters = tmp_path / "home" / "adapters"
    adapters.mkdir(parents=True, exist_ok=True)
    for recipe_id in ids:
        (adapters / f"{recipe_id}.json").write_bytes(RECIPES[recipe_id])


def ids(registry: HarnessRegistry) -> list[str]:
    return [adapter.id for adapter in registry.adapters()]


def reasons(logged: list[dict[str, Any]]) -> list[str]:
    return [event.get("reason", "") for event in logged if "reason" in event]


# the argv table


ARGV_TABLE = [
    ("codex", "interactive", ["codex", "--", P]),
    ("codex", "nonInteractive", ["codex", "exec", "--skip-git-repo-check", "--color", "never", "--", P]),
    ("claude", "interactive", ["claude", "--", P]),
    ("claude", "nonInteractive", ["claude", "--print", "--", P]),
    ("coven-code", "interactive", ["coven-code", "--", P]),
    ("coven-code", "nonInteractive", ["coven-code", "--print", "--", P]),
    ("copilot", "interactive", ["copilot", f"--interactive={P}"]),
    ("copilot", "nonInteractive", ["copilot", "--no-color", f"--prompt={P}"]),
    ("opencode", "interactive", ["opencode", "run", "--", P]),
    ("opencode", "nonInteractive", ["opencode", "run", "--", P]),
    ("hermes", "interactive", ["hermes", "chat", "--source", "coven", f"--query={P}"]),
    ("hermes", "nonInteractive", ["hermes", "chat", "--source", "coven", "-Q", f"--query={P}"]),
    ("grok", "interactive", ["grok", "--no-auto-update", "--no-alt-screen", "--output-format", "plain", f"--single={P}"]),
    ("grok", "nonInteractive", ["grok", "--no-auto-update", "--no-alt-screen", "--output-format", "plain", f"--single={P}"]),
]


@pytest.mark.parametrize(("harness", "mode", "expected"), ARGV_TABLE)
def test_argv_table(tmp_path: Path, harness: str, mode: str, expected: list[str]) -> None:
    install_recipes(tmp_path, "grok", "hermes", "opencode")
    assert make_registry(tmp_path).resolve(harness).argv(P, mode, None) == expected


def test_shell_manifest_in_the_repository(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(REPO / "adapters" / "shell.json"))
    shell = registry.resolve("shell")
    assert shell.argv("echo $((1+1))", "interactive") == ["sh", "-c", "--", "echo $((1+1))"]
    assert shell.argv("-x", "nonInteractive") == ["sh", "-c", "--", "-x"]


def test_stream_mode_has_no_pty_argv(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_registry(tmp_path).resolve("claude").argv(P, "stream", None)


def test_claude_bypass_permissions_leads_the_argv(tmp_path: Path) -> None:
    registry = make_registry(tmp_path, COVEN_CLAUDE_BYPASS_PERMISSIONS=" TRUE ")
    assert registry.resolve("claude").argv(P, "nonInteractive", "anthropic/opus") == [
        "claude", "--permission-mode", "bypassPermissions", "--model", "opus", "--print", "--", P,
    ]
    assert registry.resolve("codex").argv(P, "interactive") == ["codex", "--", P]
    assert make_registry(tmp_path, COVEN_CLAUDE_BYPASS_PERMISSIONS="yes").resolve("claude").argv(
        P, "interactive"
    ) == ["claude", "--", P]


# models


@pytest.mark.parametrize(
    ("harness", "model", "expected"),
    [
        ("codex", "openai/gpt-5", ["--model", "gpt-5"]),
        ("claude", "anthropic/claude-opus-4", ["--model", "claude-opus-4"]),
        ("copilot", "github/gpt-5", ["--model", "gpt-5"]),
        ("coven-code", "anthropic/claude-opus-4", ["--model", "anthropic/claude-opus-4"]),
        ("opencode", "openrouter/qwen/qwen3", ["--model", "openrouter/qwen/qwen3"]),
        ("hermes", "nous/hermes-4", ["--model", "nous/hermes-4"]),
        ("grok", "xai/grok-4", ["--model", "grok-4"]),
        ("codex", "gpt-5:latest@v1+x", ["--model", "gpt-5:latest@v1+x"]),
        ("codex", "a/b/c", ["--model", "b/c"]),
        ("codex", "  gpt-5  ", ["--model", "gpt-5"]),
        ("codex", "", []),
        ("codex", None, []),
    ],
)
def test_model_args(tmp_path: Path, harness: str, model: str | None, expected: list[str]) -> None:
    install_recipes(tmp_path, "grok", "hermes", "opencode")
    adapter = make_registry(tmp_path).resolve(harness)
    assert adapter.argv(P, "interactive", model) == [adapter.executable, *expected, *adapter.argv(P, "interactive")[1:]]


@pytest.mark.parametrize(
    "model",
    ["--dangerous", "openai/--flag", "-x", "gpt..5", "openai/../etc", "gpt 5", "gpt;rm", "ünï", "/abs"],
)
def test_unsafe_model_is_refused(tmp_path: Path, model: str) -> None:
    adapter = make_registry(tmp_path).resolve("codex")
    with pytest.raises(UnsafeModel, match="model id is unsafe after adapter transform for harness `codex`"):
        adapter.argv(P, "interactive", model)


def test_preserved_models_are_checked_too(tmp_path: Path) -> None:
    adapter = make_registry(tmp_path).resolve("coven-code")
    with pytest.raises(UnsafeModel):
        adapter.argv(P, "interactive", "../escape")


def test_model_template_and_adapters_without_a_model_flag(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "m.json",
        entry("templated", model_arg_template="-c model={model} --m={model}"),
        entry("modelless"),
    )
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(manifest))
    assert registry.resolve("templated").argv(P, "nonInteractive", "p/m1") == [
        "mine", "-c", "model=m1", "--m=m1", "--batch", "--", P,
    ]
    assert registry.resolve("modelless").argv(P, "interactive", "--ignored") == ["mine", "--", P]


# manifests


def test_manifest_sources_load_in_order_and_first_id_wins(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    write_manifest(tmp_path / "home" / "adapters" / "b-home.json", entry("home-one"), entry("dup", label="home"))
    manifest = write_manifest(tmp_path / "explicit.json", entry("explicit"), entry("dup", label="explicit"))
    write_manifest(tmp_path / "d1" / "x.json", entry("dir-one"))
    write_manifest(tmp_path / "d2" / "a.json", entry("dir-two"))
    write_manifest(tmp_path / "d2" / "b.JSON", entry("dir-three"))
    (tmp_path / "d2" / "notes.txt").write_text("not a manifest")
    registry = make_registry(
        tmp_path,
        COVEN_HARNESS_ADAPTER_MANIFEST=str(manifest),
        COVEN_HARNESS_ADAPTER_DIRS=os.pathsep.join([str(tmp_path / "d1"), "", str(tmp_path / "d2"), str(tmp_path / "gone")]),
    )
    assert ids(registry) == [
        "codex", "claude", "coven-code", "copilot", "home-one", "dup", "explicit", "dir-one", "dir-two", "dir-three",
    ]
    assert registry.resolve("dup").label == "home"
    assert "the id is already configured" in " ".join(e["log_format"] for e in logged)


def test_manifests_are_reread_at_every_lookup(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(manifest))
    with pytest.raises(ApiError):
        registry.resolve("mine")
    write_manifest(manifest, entry(label="First"))
    assert registry.resolve("mine").label == "First"
    write_manifest(manifest, entry(label="Second"))
    assert registry.resolve("mine").label == "Second"


def test_a_directory_listed_twice_loads_once(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    home_adapters = tmp_path / "home" / "adapters"
    write_manifest(home_adapters / "mine.json", entry())
    registry = make_registry(
        tmp_path,
        COVEN_HARNESS_ADAPTER_MANIFEST=str(home_adapters / "mine.json"),
        COVEN_HARNESS_ADAPTER_DIRS=str(home_adapters),
    )
    assert ids(registry)[4:] == ["mine"]
    assert logged == []


def test_camel_case_keys(tmp_path: Path) -> None:
    camel = {
        "id": "Camel",
        "label": " Camel ",
        "executable": "camel",
        "interactivePromptPrefixArgs": ["chat"],
        "nonInteractivePromptPrefixArgs": ["chat", "-q"],
        "installHint": "install camel",
        "promptFlag": "--ask",
        "interactivePromptFlag": "--talk",
        "modelFlag": "-m",
        "modelIdTransform": "preserve",
        "capabilities": {"stream": False},
        "version": "1.0",
    }
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(write_manifest(tmp_path / "m.json", camel)))
    adapter = registry.resolve("camel")
    assert adapter.label == "Camel"
    assert adapter.argv(P, "interactive", "p/m") == ["camel", "-m", "p/m", "chat", f"--talk={P}"]
    assert adapter.argv(P, "nonInteractive") == ["camel", "chat", "-q", f"--ask={P}"]


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ({"id": "Bad Id"}, "invalid id"),
        ({"id": "-dash"}, "invalid id"),
        ({"id": ""}, "invalid id"),
        ({"executable": "/usr/bin/mine"}, "invalid executable"),
        ({"executable": "bin\\mine"}, "invalid executable"),
        ({"executable": "my tool"}, "invalid executable"),
        ({"executable": " "}, "invalid executable"),
        ({"label": "  "}, "label must not be empty"),
        ({"install_hint": ""}, "install_hint must not be empty"),
        ({"label": 3}, "Expected `str`, got `int`"),
        ({"interactive_prompt_prefix_args": "-c"}, "Expected `array`, got `str`"),
        ({"model_id_transform": "shout"}, "Invalid enum value 'shout'"),
        ({"model_arg_template": "--model"}, "{model}"),
        ({"model_id_transform": "preserve"}, "needs a model_flag"),
        ({"installHint": "twice"}, "given twice"),
        ({"id": "claude"}, "built-in harness"),
    ],
)
def test_broken_entries_are_skipped_with_a_reason(
    tmp_path: Path, logged: list[dict[str, Any]], broken: dict[str, Any], reason: str
) -> None:
    manifest = write_manifest(tmp_path / "m.json", entry("bad", **broken), entry("good"))
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(manifest))
    assert ids(registry) == ["codex", "claude", "coven-code", "copilot", "good"]
    assert registry.resolve("claude").label == "Claude Code"
    assert any(reason in r for r in reasons(logged)), reasons(logged)


def test_missing_required_field_and_non_object_entry(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    partial = entry("partial")
    del partial["install_hint"]
    manifest = write_manifest(tmp_path / "m.json", partial, "not-an-object", entry("good"))  # type: ignore[arg-type]
    assert ids(make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(manifest)))[4:] == ["good"]
    assert any("missing required field `install_hint`" in r for r in reasons(logged))
    assert any("must be a JSON object" in r for r in reasons(logged))


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'{"adapters": {"id": "x"}}', b"\xff\xfe garbage"],
)
def test_broken_manifest_files_are_skipped(tmp_path: Path, logged: list[dict[str, Any]], content: bytes) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a-broken.json").write_bytes(content)
    write_manifest(tmp_path / "dir" / "b-good.json", entry())
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_DIRS=str(tmp_path / "dir"))
    assert ids(registry)[4:] == ["mine"]
    assert [e["path"] for e in logged if "reason" in e] == [str(tmp_path / "dir" / "a-broken.json")]


def test_unreadable_manifest_paths_are_skipped(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    (tmp_path / "dir.json").mkdir()
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(tmp_path / "missing.json"))
    assert ids(registry) == ["codex", "claude", "coven-code", "copilot"]
    assert reasons(logged) and "No such file" in reasons(logged)[0]
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(tmp_path / "dir.json"))
    assert ids(registry) == ["codex", "claude", "coven-code", "copilot"]


def test_manifest_without_adapters_is_empty(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    (tmp_path / "m.json").write_text('{"version": 1}')
    assert ids(make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(tmp_path / "m.json")))[4:] == []
    assert logged == []


# recipes


def test_recipes_load_only_when_byte_identical(tmp_path: Path, logged: list[dict[str, Any]]) -> None:
    adapters = tmp_path / "home" / "adapters"
    install_recipes(tmp_path, "grok", "hermes", "opencode")
    registry = make_registry(tmp_path)
    assert ids(registry)[4:] == ["grok", "hermes", "opencode"]

    reformatted = json.dumps(json.loads(RECIPES["hermes"]))  # same adapter, other bytes
    (adapters / "hermes.json").write_text(reformatted)
    (adapters / "grok.json").write_bytes(RECIPES["grok"].replace(b'"grok",', b'"evil",', 1))
    assert ids(registry)[4:] == ["opencode"]
    skipped = [e["path"] for e in logged if "not the bundled recipe" in e["log_format"]]
    assert skipped == [str(adapters / "grok.json"), str(adapters / "hermes.json")]


def test_a_symlinked_recipe_is_not_trusted(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.json").write_bytes(RECIPES["opencode"])
    (tmp_path / "home" / "adapters").mkdir(parents=True)
    (tmp_path / "home" / "adapters" / "opencode.json").symlink_to(tmp_path / "elsewhere.json")
    assert ids(make_registry(tmp_path))[4:] == []


def test_home_adapters_that_are_not_recipes_are_custom(tmp_path: Path) -> None:
    install_recipes(tmp_path, "opencode")
    write_manifest(tmp_path / "home" / "adapters" / "team.json", entry("team-agent"))
    assert ids(make_registry(tmp_path))[4:] == ["opencode", "team-agent"]


def test_recipe_bytes_outside_the_home_are_ordinary_manifests(tmp_path: Path) -> None:
    edited = json.loads(RECIPES["grok"])
    edited["adapters"][0]["label"] = "My Grok"
    manifest = write_manifest(tmp_path / "dir" / "grok.json", *edited["adapters"])
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_DIRS=str(manifest.parent))
    assert registry.resolve("grok").label == "My Grok"


# the unsupported-harness message

TAIL = (
    "For other external harnesses, create a trusted adapter manifest under COVEN_HOME/adapters or set "
    "COVEN_HARNESS_ADAPTER_MANIFEST / COVEN_HARNESS_ADAPTER_DIRS before starting Coven."
)


def test_unknown_harness_message(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as raised:
        make_registry(tmp_path).resolve("aider")
    assert (raised.value.status, raised.value.code, raised.value.details) == (400, "invalid_request", None)
    assert raised.value.message == (
        "unsupported harness `aider`. Configured harnesses: codex, claude, coven-code, copilot. "
        "Known installable adapter recipes: grok, hermes, opencode. " + TAIL
    )


@pytest.mark.parametrize("recipe", ["grok", "hermes", "opencode"])
def test_uninstalled_recipe_message_lists_manifest_ids(tmp_path: Path, recipe: str) -> None:
    registry = make_registry(tmp_path, COVEN_HARNESS_ADAPTER_MANIFEST=str(REPO / "adapters" / "shell.json"))
    with pytest.raises(ApiError) as raised:
        registry.resolve(recipe)
    assert raised.value.message == (
        f"unsupported harness `{recipe}`. Configured harnesses: codex, claude, coven-code, copilot, shell. "
        f"To use it, run `coven adapter install {recipe}`, then `coven adapter doctor {recipe}`. " + TAIL
    )


def test_lookup_is_exact(tmp_path: Path) -> None:
    with pytest.raises(ApiError):
        make_registry(tmp_path).resolve("Claude")


# executable resolution


def make_program(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def tool(executable: str = "tool") -> Adapter:
    return Adapter(id="t", label="T", executable=executable, install_hint="h")


def test_resolve_executable_prefers_cwd_then_path_order(tmp_path: Path) -> None:
    cwd, first, second = tmp_path / "cwd", tmp_path / "first", tmp_path / "second"
    cwd.mkdir()
    make_program(second / "tool")
    path_env = os.pathsep.join([str(first), "", str(second)])
    assert tool().resolve_executable(path_env, str(cwd)) == str(second / "tool")
    make_program(first / "tool")
    assert tool().resolve_executable(path_env, str(cwd)) == str(first / "tool")
    make_program(cwd / "tool")
    assert tool().resolve_executable(path_env, str(cwd)) == str(cwd / "tool")


def test_resolve_executable_skips_what_cannot_run(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    make_program(cwd / "tool", mode=0o644)
    (tmp_path / "a" / "tool").mkdir(parents=True)
    make_program(tmp_path / "b" / "tool", mode=0o100)
    path_env = os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")])
    assert tool().resolve_executable(path_env, str(cwd)) == str(tmp_path / "b" / "tool")
    assert tool("absent").resolve_executable(path_env, str(cwd)) is None
    assert tool().resolve_executable("", str(tmp_path / "gone")) is None


def test_resolve_executable_relative_path_entries_and_symlinks(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    target = make_program(tmp_path / "real" / "program")
    (cwd / "bin").mkdir(parents=True)
    (cwd / "bin" / "tool").symlink_to(target)
    assert tool().resolve_executable("bin", str(cwd)) == str(cwd / "bin" / "tool")


def test_resolve_executable_finds_sh() -> None:
    found = tool("sh").resolve_executable(os.environ.get("PATH", os.defpath), "/")
    assert found is not None and os.access(found, os.X_OK)
