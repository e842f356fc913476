"""Harness adapters: which programs a launch may start, and their exact argv (contract B §9).

The four built-ins are code. The installable recipes (grok, hermes, opencode) are trusted only
when the user's ``$COVEN_HOME/adapters/<id>.json`` is byte-identical to the copy bundled here,
so a recipe cannot be quietly edited into something else. Everything else is a user's trusted
JSON manifest: the file named by ``COVEN_HARNESS_ADAPTER_MANIFEST``, any ``*.json`` in the
``COVEN_HARNESS_ADAPTER_DIRS`` directories, and (this project's addition) any other ``*.json``
in ``$COVEN_HOME/adapters``. Manifests are re-read at every launch, so adding or fixing one
needs no restart; a broken file or entry is skipped with a logged reason and never stops the
launches that do not need it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
from twisted.logger import Logger

from coven.config import Config
from coven.errors import invalid_request

log = Logger()

ModelIdTransform = Literal["strip_provider", "preserve"]

_ADAPTER_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_SAFE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


class UnsafeModel(ValueError):
    """A model id a harness could parse as an option; the launch fails with 500 launch_failed."""


class Adapter(msgspec.Struct, frozen=True, kw_only=True):
    """One configured harness: how to find its program and how to build its argv."""

    id: str
    label: str
    executable: str
    install_hint: str
    interactive_prompt_prefix_args: tuple[str, ...] = ()
    non_interactive_prompt_prefix_args: tuple[str, ...] = ()
    prompt_flag: str | None = None
    interactive_prompt_flag: str | None = None
    model_flag: str | None = None
    model_arg_template: str | None = None
    model_id_transform: ModelIdTransform = "strip_provider"
    # Before everything else; only claude's COVEN_CLAUDE_BYPASS_PERMISSIONS uses it.
    leading_args: tuple[str, ...] = ()

    def argv(self, prompt: str, launch_mode: str, model: str | None = None) -> list[str]:
        """``<exe> [leading][model args] <mode prefix> <prompt part>``, argv[0] the bare name.

        ``nonInteractive`` runs in the pty like ``interactive`` (contract A15), codex included:
        its prompt is an argument behind ``--`` instead of the reference's piped stdin, so
        every launch mode is one code path. Stream mode has no argv here; the caller refuses it.
        """
        if launch_mode == "interactive":
            prefix = self.interactive_prompt_prefix_args
            flag = self.interactive_prompt_flag or self.prompt_flag
        elif launch_mode == "nonInteractive":
            prefix = self.non_interactive_prompt_prefix_args
            flag = self.prompt_flag
        else:
            raise ValueError(f"no pty argv for launch mode {launch_mode!r}")
        # `--flag=<prompt>` keeps a prompt starting with `-` a value; otherwise `--` does.
        prompt_part = [f"{flag}={prompt}"] if flag else ["--", prompt]
        return [self.executable, *self.leading_args, *self.model_args(model), *prefix, *prompt_part]

    def model_args(self, model: str | None) -> list[str]:
        """Argv selecting ``model``; none when no model is asked for or the adapter has no flag.

        The id is checked after the provider prefix is stripped, so ``openai/--flag`` cannot
        become an option by losing its prefix.
        """
        model = (model or "").strip()
        if not model or not (self.model_flag or self.model_arg_template):
            return []
        if self.model_id_transform == "strip_provider":
            model = _strip_provider(model)
        if ".." in model or not _SAFE_MODEL.fullmatch(model):
            raise UnsafeModel(
                f"model id is unsafe after adapter transform for harness `{self.id}`: {json.dumps(model)}"
            )
        if self.model_arg_template:
            return [token.replace("{model}", model) for token in self.model_arg_template.split()]
        return [self.model_flag, model]

    def resolve_executable(self, path_env: str, cwd: str) -> str | None:
        """The program a spawn would run: ``cwd/<exe>`` first, then each ``$PATH`` directory.

        The reference's order (portable-pty). Only a regular file with an execute bit counts,
        so a missing or unrunnable harness is a clean launch_failed instead of an exec
        traceback on the pty. Relative PATH entries are taken from ``cwd``, as the child would.
        """
        directories = [cwd, *(os.path.join(cwd, entry) for entry in path_env.split(os.pathsep) if entry)]
        for directory in directories:
            candidate = os.path.join(directory, self.executable)
            try:
                mode = os.stat(candidate).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & 0o111:
                return candidate
        return None


def _strip_provider(model: str) -> str:
    """``provider/model`` -> ``model``; anything else unchanged (harness.rs ``normalize_model_id``)."""
    provider, slash, rest = model.partition("/")
    if slash and provider and rest and not rest.startswith("/"):
        return rest
    return model


BUILT_INS = (
    Adapter(
        id="codex",
        label="Codex",
        executable="codex",
        install_hint="Install the Codex CLI (`npm install -g @openai/codex`) and make sure `codex` is on PATH.",
        non_interactive_prompt_prefix_args=("exec", "--skip-git-repo-check", "--color", "never"),
        model_flag="--model",
    ),
    Adapter(
        id="claude",
        label="Claude Code",
        executable="claude",
        install_hint="Install Claude Code (`npm install -g @anthropic-ai/claude-code`) and make sure `claude` is on PATH.",
        non_interactive_prompt_prefix_args=("--print",),
        model_flag="--model",
    ),
    Adapter(
        id="coven-code",
        label="Coven Code",
        executable="coven-code",
        install_hint="Install the Coven engine with `coven engine install`.",
        non_interactive_prompt_prefix_args=("--print",),
        model_flag="--model",
        model_id_transform="preserve",
    ),
    Adapter(
        id="copilot",
        label="Copilot CLI",
        executable="copilot",
        install_hint="Install the GitHub Copilot CLI (`npm install -g @github/copilot`) and make sure `copilot` is on PATH.",
        non_interactive_prompt_prefix_args=("--no-color",),
        prompt_flag="--prompt",
        interactive_prompt_flag="--interactive",
        model_flag="--model",
    ),
)
BUILT_IN_IDS = tuple(adapter.id for adapter in BUILT_INS)

_GROK_ARGS = ["--no-auto-update", "--no-alt-screen", "--output-format", "plain"]
_NO_CAPABILITIES = {"stream": False, "preassigned_session_id": False, "think": False, "speed": False}

# The reference's current recipes (harness.rs), rendered exactly as it ships them, so a file a
# Coven Cave or `coven adapter install` wrote is trusted here too.
_RECIPE_DOCUMENTS: dict[str, dict[str, Any]] = {
    "grok": {
        "id": "grok",
        "label": "Grok Build",
        "executable": "grok",
        "interactive_prompt_prefix_args": _GROK_ARGS,
        "non_interactive_prompt_prefix_args": _GROK_ARGS,
        "prompt_flag": "--single",
        "interactive_prompt_flag": "--single",
        "install_hint": "Install Grok Build by following xAI's official instructions at https://docs.x.ai/build/overview. Make sure `grok` is on PATH and run `grok login` (or set XAI_API_KEY for headless auth), then retry `coven adapter doctor grok`.",
        "system_prompt_flag": "--rules",
        "model_flag": "--model",
        "capabilities": {**_NO_CAPABILITIES, "preassigned_session_id": True},
        "sandbox": {
            "full_args": ["--permission-mode", "bypassPermissions", "--sandbox", "off"],
            "read_only_args": ["--permission-mode", "default", "--sandbox", "read-only"],
        },
        "continuity_args": {
            "init_prefix_args": _GROK_ARGS,
            "resume_prefix_args": _GROK_ARGS,
            "session_id_flag": "--session-id",
            "resume_flag": "--resume",
        },
        "version": "1.0.0",
        "homepage": "https://docs.x.ai/build/cli/headless-scripting",
        "description": "xAI Grok Build adapter. Finite one-shot headless runs via `--single=<prompt>` in Grok's plain output mode (`--output-format plain`, its own default): stdout carries only the final response text, reasoning is dropped at the source, and errors go to stderr — no event protocol or translation layer. Session pre-assignment via `--session-id`, cold-start resume via `--resume`. Permission mapping uses the argv-list sandbox form to drive both `--permission-mode` and `--sandbox`. No stream mode: every turn is a fresh process.",
    },
    "hermes": {
        "id": "hermes",
        "label": "Hermes Agent",
        "executable": "hermes",
        "interactive_prompt_prefix_args": ["chat", "--source", "coven"],
        "non_interactive_prompt_prefix_args": ["chat", "--source", "coven", "-Q"],
        "prompt_flag": "--query",
        "interactive_prompt_flag": "--query",
        "install_hint": "Install and complete setup for Hermes Agent from https://github.com/NousResearch/hermes-agent, then ensure the native `hermes` executable resolves on PATH.",
        "model_flag": "--model",
        "model_id_transform": "preserve",
        "capabilities": _NO_CAPABILITIES,
        "version": "1.0.3",
        "description": "Hermes adapter using the native `hermes chat` executable and `--query` prompt binding while preserving provider-qualified model IDs.",
    },
    "opencode": {
        "id": "opencode",
        "label": "OpenCode",
        "executable": "opencode",
        "interactive_prompt_prefix_args": ["run"],
        "non_interactive_prompt_prefix_args": ["run"],
        "install_hint": "Install OpenCode from https://opencode.ai/docs/cli (e.g. `npm i -g opencode-ai`) and ensure `opencode` resolves on PATH. Verify with `opencode run --help` — the similarly-named Go app some package managers ship has no `run` subcommand and will not work.",
        "model_flag": "--model",
        "model_id_transform": "preserve",
        "capabilities": _NO_CAPABILITIES,
        "version": "0.1.1",
        "homepage": "https://opencode.ai",
        "description": "OpenCode runtime adapter for Coven. Drives `opencode run` in both native launch modes and preserves provider-qualified model IDs; system prompts and tools are configured via project config (AGENTS.md / opencode.json).",
    },
}
RECIPES: dict[str, bytes] = {
    recipe_id: (json.dumps({"adapters": [document]}, indent=2, ensure_ascii=False) + "\n").encode()
    for recipe_id, document in _RECIPE_DOCUMENTS.items()
}
RECIPE_IDS = tuple(RECIPES)


def unsupported_harness_message(harness_id: str, configured_ids: list[str]) -> str:
    """The exact 400 message of contract B §6.3 step 5."""
    if harness_id in RECIPES:
        hint = f"To use it, run `coven adapter install {harness_id}`, then `coven adapter doctor {harness_id}`."
    else:
        hint = f"Known installable adapter recipes: {', '.join(RECIPE_IDS)}."
    return (
        f"unsupported harness `{harness_id}`. Configured harnesses: {', '.join(configured_ids) or '(none)'}. "
        f"{hint} For other external harnesses, create a trusted adapter manifest under COVEN_HOME/adapters "
        "or set COVEN_HARNESS_ADAPTER_MANIFEST / COVEN_HARNESS_ADAPTER_DIRS before starting Coven."
    )


class _ManifestFile(msgspec.Struct):
    adapters: list[Any] = []


class _ManifestEntry(msgspec.Struct):
    """The fields of an entry this daemon uses; the others (capabilities, sandbox, …) are ignored."""

    id: str
    label: str
    executable: str
    interactive_prompt_prefix_args: tuple[str, ...]
    non_interactive_prompt_prefix_args: tuple[str, ...]
    install_hint: str
    prompt_flag: str | None = None
    interactive_prompt_flag: str | None = None
    model_flag: str | None = None
    model_arg_template: str | None = None
    model_id_transform: ModelIdTransform = "strip_provider"


_manifest_decoder = msgspec.json.Decoder(_ManifestFile)


class _Skip(Exception):
    """An entry that is not loaded; the message says why."""


def _optional(value: str | None) -> str | None:
    return (value or "").strip() or None


def _adapter(raw: Any) -> Adapter:
    """Validate one manifest entry the way harness.rs ``into_spec`` does."""
    if not isinstance(raw, dict):
        raise _Skip("an adapter entry must be a JSON object")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = _CAMEL_HUMP.sub("_", key).lower()
        if name in fields:
            raise _Skip(f"field `{name}` is given twice")
        fields[name] = value
    try:
        entry = msgspec.convert(fields, _ManifestEntry)
    except msgspec.ValidationError as e:
        raise _Skip(str(e)) from e
    adapter_id = entry.id.strip().lower()
    if not _ADAPTER_ID.fullmatch(adapter_id):
        raise _Skip(f"invalid id `{entry.id}`; use lowercase letters, digits, '.', '_' or '-'")
    if adapter_id in BUILT_IN_IDS:
        raise _Skip(f"`{adapter_id}` is a built-in harness; the built-in wins")
    executable = entry.executable.strip()
    if not executable or any(c in "/\\" or c.isspace() for c in executable):
        raise _Skip(f"invalid executable `{entry.executable}`; it must be a bare program name")
    if not entry.label.strip():
        raise _Skip("label must not be empty")
    if not entry.install_hint.strip():
        raise _Skip("install_hint must not be empty")
    template = _optional(entry.model_arg_template)
    if template and "{model}" not in template:
        raise _Skip("model_arg_template must contain the `{model}` placeholder")
    model_flag = _optional(entry.model_flag)
    if entry.model_id_transform == "preserve" and not (model_flag or template):
        raise _Skip("model_id_transform `preserve` needs a model_flag or model_arg_template")
    return Adapter(
        id=adapter_id,
        label=entry.label.strip(),
        executable=executable,
        install_hint=entry.install_hint.strip(),
        interactive_prompt_prefix_args=entry.interactive_prompt_prefix_args,
        non_interactive_prompt_prefix_args=entry.non_interactive_prompt_prefix_args,
        prompt_flag=_optional(entry.prompt_flag),
        interactive_prompt_flag=_optional(entry.interactive_prompt_flag),
        model_flag=model_flag,
        model_arg_template=template,
        model_id_transform=entry.model_id_transform,
    )


def _parse_manifest(raw: bytes, path: Path) -> Iterator[Adapter]:
    try:
        manifest = _manifest_decoder.decode(raw)
    except msgspec.DecodeError as e:
        log.warn("skipping harness adapter manifest {path}: {reason}", path=str(path), reason=str(e))
        return
    for index, entry in enumerate(manifest.adapters):
        try:
            yield _adapter(entry)
        except _Skip as e:
            log.warn(
                "skipping harness adapter {index} in {path}: {reason}",
                index=index, path=str(path), reason=str(e),
            )


# The daemon itself is short of resources: no manifest is at fault, and skipping one would
# answer "unsupported harness" for a harness that is configured.
_EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)


def _json_files(directory: Path) -> list[Path]:
    try:
        entries = list(directory.iterdir())
    except OSError as e:
        if e.errno in _EXHAUSTED:
            raise
        return []
    return sorted(path for path in entries if path.suffix.lower() == ".json" and path.is_file())


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as e:
        if e.errno in _EXHAUSTED:
            raise
        log.warn("skipping harness adapter manifest {path}: {reason}", path=str(path), reason=str(e))
        return None


class HarnessRegistry:
    """The configured harnesses, read afresh from the manifests at every call."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def adapters(self) -> list[Adapter]:
        """Built-ins first, then manifest adapters in load order; a repeated id keeps the first."""
        adapters = list(_built_ins(self._config.environ))
        ids = set(BUILT_IN_IDS)
        for path, adapter in self._external():
            if adapter.id in ids:
                log.warn(
                    "skipping harness adapter {id} in {path}: the id is already configured",
                    id=adapter.id, path=str(path),
                )
                continue
            ids.add(adapter.id)
            adapters.append(adapter)
        return adapters

    def resolve(self, harness_id: str) -> Adapter:
        """The adapter for a launch, or the 400 invalid_request that lists what is configured."""
        adapters = self.adapters()
        for adapter in adapters:
            if adapter.id == harness_id:
                return adapter
        raise invalid_request(unsupported_harness_message(harness_id, [a.id for a in adapters]))

    def _external(self) -> Iterator[tuple[Path, Adapter]]:
        seen: set[Path] = set()
        for path in self._manifest_paths():
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            raw = _read(path)
            if raw is not None and self._trusted(path, raw):
                for adapter in _parse_manifest(raw, path):
                    yield path, adapter

    def _manifest_paths(self) -> list[Path]:
        """Home adapters, then the manifest file, then the manifest directories."""
        config = self._config
        paths = _json_files(config.adapters_dir)
        if config.adapter_manifest:
            paths.append(Path(config.adapter_manifest))
        for directory in config.adapter_dirs:
            paths += _json_files(Path(directory))
        return paths

    def _trusted(self, path: Path, raw: bytes) -> bool:
        """A recipe's file in the home adapters dir loads only as the exact bundled recipe."""
        recipe = RECIPES.get(path.stem)
        if recipe is None or path.parent != self._config.adapters_dir:
            return True
        if raw == recipe and not path.is_symlink():
            return True
        log.warn("skipping harness adapter recipe {path}: it is not the bundled recipe", path=str(path))
        return False


def _built_ins(environ: Mapping[str, str]) -> tuple[Adapter, ...]:
    """COVEN_CLAUDE_BYPASS_PERMISSIONS=1 (or true) puts claude in bypassPermissions mode."""
    if environ.get("COVEN_CLAUDE_BYPASS_PERMISSIONS", "").strip().lower() not in ("1", "true"):
        return BUILT_INS
    return tuple(
        msgspec.structs.replace(a, leading_args=("--permission-mode", "bypassPermissions"))
        if a.id == "claude"
        else a
        for a in BUILT_INS
    )
