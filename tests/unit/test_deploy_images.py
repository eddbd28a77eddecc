"""The container image and every compose file under deploy/ (no Docker here: parse and check them).

* The Dockerfile: base image pinned by exact tag and digest, installs from the lock, non-root,
  data volume, API port, health check, `moby` as entrypoint with real subcommands.
* The locks (requirements/*.txt): every pin of pyproject.toml, every package hash-pinned.
* .dockerignore: the context holds what the Dockerfile copies and nothing else.
* Every compose file: each service's image is built from this repository or is a public image
  pinned to an exact version; every MOBY_* variable it passes is one MOBY reads.

The checks are functions returning problems, so that the tests below can show each one fails on
a bad file before it is trusted to pass on the real ones.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from moby.cli import app
from moby.config import Settings, unknown_variables

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SUBCOMMANDS = frozenset(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# What this repository builds, by the Dockerfile's target, and the one tag each is known by.
BUILT = {"server": f"moby:{VERSION}", "edge": f"moby-edge:{VERSION}"}
OUR_NAMES = frozenset(tag.split(":")[0] for tag in BUILT.values())
# Upstreams whose releases have two numbers (PostgreSQL since 10: 16.15 is a release, 16 is not).
TWO_PART_VERSIONS = frozenset({"postgres"})


# --- the Dockerfile, read as Docker does (the part of its syntax this repository uses) ------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: str  # the stage it belongs to ("" before the first FROM)


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments (also inside them) dropped."""
    out: list[Instruction] = []
    stage, pending = "", ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{len(out)}"
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def global_args(instrs: list[Instruction]) -> dict[str, str]:
    return dict(i.args.split("=", 1) for i in instrs if i.keyword == "ARG" and not i.stage and "=" in i.args)


def env_of(instrs: list[Instruction], stages: set[str]) -> dict[str, str]:
    """The ENV a stage's image has (``stages``: it and the stages it is built FROM)."""
    env: dict[str, str] = {}
    for i in instrs:
        if i.keyword == "ENV" and i.stage in stages:
            env.update(word.split("=", 1) for word in shlex.split(i.args))  # type: ignore[misc]
    return env


def lineage(instrs: list[Instruction], stage: str) -> list[str]:
    """``stage`` and the stages it is built on, nearest first."""
    bases = {i.stage: i.args.split()[0] for i in instrs if i.keyword == "FROM"}
    chain = [stage]
    while bases.get(chain[-1]) in bases:
        chain.append(bases[chain[-1]])
    return chain


def last_of(instrs: list[Instruction], keyword: str, stage: str) -> str | None:
    """The instruction's value in ``stage``'s image (its own, else inherited)."""
    for name in lineage(instrs, stage):
        found = [i.args for i in instrs if i.keyword == keyword and i.stage == name]
        if found:
            return found[-1]
    return None


DOCKERFILE = instructions((ROOT / "Dockerfile").read_text())
STAGES = [i.stage for i in DOCKERFILE if i.keyword == "FROM"]


# --- image references ---------------------------------------------------------------------------
def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``[registry/]name[:tag][@digest]`` → (name, tag, digest)."""
    ref, _, digest = ref.partition("@")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :], digest or None
    return ref, None, digest or None


def short_name(name: str) -> str:
    for prefix in ("docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name


def unpinned(ref: str, *, digest_required: bool = False) -> str | None:
    """Why a public image reference is not pinned to one exact version, or None."""
    name, tag, digest = split_image(ref)
    if digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return f"{ref}: {digest!r} is not a sha256 digest"
    if tag is None or tag == "latest":
        return f"{ref}: no version (a tag such as latest moves): pin an exact release"
    parts = 2 if short_name(name) in TWO_PART_VERSIONS else 3
    if not re.fullmatch(rf"v?\d+(\.\d+){{{parts - 1}}}([.-][A-Za-z0-9._-]+)?", tag):
        return f"{ref}: tag {tag!r} is not an exact release (it moves with every patch)"
    if digest_required and digest is None:
        return f"{ref}: no @sha256 digest"
    return None


# --- compose files --------------------------------------------------------------------------------
def compose_files() -> list[Path]:
    names = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
    return sorted(p for p in DEPLOY.rglob("*") if p.name in names or p.name.startswith("docker-compose."))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict([*item.split("=", 1), ""][:2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_words(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def compose_problems(doc: Mapping[str, Any], where: Path) -> list[str]:
    """Every way a compose file's services fail the rules (empty: it passes)."""
    problems: list[str] = []
    for name, service in (doc.get("services") or {}).items():
        at = f"{where.relative_to(ROOT) if where.is_relative_to(ROOT) else where}: service {name}"
        image = service.get("image")
        build = service.get("build")
        if build is not None:
            problems += build_problems(service, where, at)
        elif image is None:
            problems.append(f"{at}: neither an image nor a build")
        elif split_image(image)[0] in OUR_NAMES:
            problems.append(
                f"{at}: {image} is MOBY's image, which nothing builds for this file: add "
                "`build: {context: <the repository>, target: ...}`"
            )
        elif (why := unpinned(image)) is not None:
            problems.append(f"{at}: {why}")
        problems += [f"{at}: {w}" for w in unknown_variables(environment(service))]
    return problems


def build_problems(service: Mapping[str, Any], where: Path, at: str) -> list[str]:
    build = service["build"]
    build = {"context": build} if isinstance(build, str) else build
    context = (where.parent / build.get("context", ".")).resolve()
    if context != ROOT or build.get("dockerfile", "Dockerfile") != "Dockerfile":
        return [f"{at}: builds {context}, not the repository's Dockerfile (the one image MOBY has)"]
    target = build.get("target", STAGES[-1])
    if target not in BUILT:
        return [f"{at}: target {target!r} is not one of the Dockerfile's images {sorted(BUILT)}"]
    problems = []
    if service.get("image") != BUILT[target]:
        problems.append(
            f"{at}: tag the image {BUILT[target]} (as `docker build -t` does), not {service.get('image')}"
        )
    words = command_words(service)
    if words and words[0] not in SUBCOMMANDS:
        problems.append(
            f"{at}: command {words} does not start with a moby command (the entrypoint is already "
            f"`moby`): one of {sorted(SUBCOMMANDS)}"
        )
    return problems


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- .dockerignore, as Docker reads it (the syntax this repository uses) -------------------------
def _glob(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            c = pattern[i]
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
    return re.compile(out + r"\Z")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        body = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _glob(body)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    excluded = False
    for keep, rx in rules:
        if any(rx.match(p) for p in prefixes):
            excluded = not keep
    return not excluded


def repo_files() -> Iterator[str]:
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for f in files:
            yield str((Path(folder) / f).relative_to(ROOT))


def copied_sources() -> list[str]:
    """What the Dockerfile's COPY instructions take from the build context."""
    sources = []
    for i in DOCKERFILE:
        if i.keyword == "COPY" and "--from=" not in i.args:
            sources += [s.rstrip("/") for s in shlex.split(i.args)[:-1] if not s.startswith("--")]
    return sources


# --- the lock ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Locked:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        return spec.version


def read_lock(path: Path) -> dict[str, Locked]:
    entries: dict[str, Locked] = {}
    current: Requirement | None = None
    hashes: list[str] = []

    def done() -> None:
        if current is not None:
            entries[canonicalize_name(current.name)] = Locked(current, tuple(hashes))

    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip(" \\")
        if not line or line.lstrip().startswith("#"):
            continue
        if raw[0].isspace():
            hashes += re.findall(r"--hash=(sha256:[0-9a-f]{64})", line)
            continue
        done()
        current, hashes = Requirement(line), []
    done()
    return entries


LOCK = ROOT / "requirements" / "moby.txt"
EDGE_LOCK = ROOT / "requirements" / "edge.txt"
BUILD_LOCK = ROOT / "requirements" / "build.txt"


# ==================================================================================================
# The Dockerfile
def test_the_base_image_is_pinned_by_exact_tag_and_digest() -> None:
    args = global_args(DOCKERFILE)
    for i in DOCKERFILE:
        if i.keyword != "FROM":
            continue
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], i.args.split()[0])
        if base in STAGES:
            continue  # built on an earlier stage
        assert unpinned(base, digest_required=True) is None, base
        assert split_image(base)[0] == "python" and "slim" in (split_image(base)[1] or "")


def test_the_stages_and_their_defaults() -> None:
    assert STAGES[-1] == "server", "`docker build .` builds the backend image (the last stage)"
    assert set(BUILT) <= set(STAGES)
    for stage in BUILT:
        assert json.loads(last_of(DOCKERFILE, "ENTRYPOINT", stage) or "null") == ["moby"]
        cmd = json.loads(last_of(DOCKERFILE, "CMD", stage) or "null")
        assert cmd and cmd[0] in SUBCOMMANDS, (stage, cmd)
        user = last_of(DOCKERFILE, "USER", stage) or "root"
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{stage} runs as {user}: a numeric, non-root uid"
    assert json.loads(last_of(DOCKERFILE, "CMD", "server") or "null") == ["serve"]
    assert json.loads(last_of(DOCKERFILE, "CMD", "edge") or "null")[0] == "edge"


def test_the_data_dir_is_a_volume_and_the_api_port_is_exposed() -> None:
    for stage in BUILT:
        env = env_of(DOCKERFILE, set(lineage(DOCKERFILE, stage)))
        volumes = json.loads(last_of(DOCKERFILE, "VOLUME", stage) or "[]")
        assert env["MOBY_DATA_DIR"] in volumes, (stage, env, volumes)
        assert last_of(DOCKERFILE, "WORKDIR", stage) == env["MOBY_DATA_DIR"]  # relative paths land there
    server = env_of(DOCKERFILE, set(lineage(DOCKERFILE, "server")))
    assert last_of(DOCKERFILE, "EXPOSE", "server") == str(Settings.model_fields["api_port"].default)
    # Reachable from outside the container, which makes MOBY require API tokens (auto).
    assert server["MOBY_API_HOST"] == "0.0.0.0" and "MOBY_API_AUTH" not in server


def test_every_moby_variable_the_image_sets_is_known() -> None:
    for stage in STAGES:
        env = env_of(DOCKERFILE, set(lineage(DOCKERFILE, stage)))
        assert unknown_variables(env) == [], stage


def test_the_health_check_runs_the_copied_script_within_its_timeout() -> None:
    check = last_of(DOCKERFILE, "HEALTHCHECK", "server")
    assert check is not None
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", check))
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "/opt/moby/bin/python", "the venv's python (it has moby): the slim image has no curl"
    assert ["--from=build", "/opt/moby", "/opt/moby"] in [
        shlex.split(i.args) for i in DOCKERFILE if i.keyword == "COPY" and i.stage == "server"
    ]  # the venv
    copies = [shlex.split(i.args) for i in DOCKERFILE if i.keyword == "COPY" and i.stage == "server"]
    assert ["deploy/image/healthcheck.py", command[1]] in copies
    script = (ROOT / "deploy/image/healthcheck.py").read_text()
    timeout = float(re.search(r"^TIMEOUT_S = ([0-9.]+)", script, re.M).group(1))  # type: ignore[union-attr]
    assert timeout < float(options["timeout"].rstrip("s"))
    assert last_of(DOCKERFILE, "HEALTHCHECK", "edge") is None  # nothing to ask the agent


def test_the_image_installs_from_the_locks_with_their_hashes() -> None:
    runs = " ".join(i.args for i in DOCKERFILE if i.keyword == "RUN" and i.stage == "build")
    for lock in (LOCK, BUILD_LOCK):
        rel = lock.relative_to(ROOT)
        assert re.search(rf"--require-hashes --only-binary=:all:( --no-deps)? -r {rel}", runs), rel
    assert "pip check" in runs
    # the edge image: its own, lighter lock, and MOBY's wheel from the build stage
    edge = " ".join(i.args for i in DOCKERFILE if i.keyword == "RUN" and i.stage == "build-edge")
    assert "--require-hashes --only-binary=:all: --no-deps -r /tmp/edge.txt" in edge and "pip check" in edge
    assert ["requirements/edge.txt", "/tmp/edge.txt"] in [
        shlex.split(i.args) for i in DOCKERFILE if i.keyword == "COPY" and i.stage == "build-edge"
    ]
    assert ["--from=build-edge", "/opt/moby", "/opt/moby"] in [
        shlex.split(i.args) for i in DOCKERFILE if i.keyword == "COPY" and i.stage == "edge"
    ]


def test_every_hadolint_ignore_says_why() -> None:
    """An ignored rule comes with its reason: a comment line of its own right above the pragma."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for n, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[n - 1].strip() if n else ""
            assert above.startswith("#") and "hadolint" not in above and len(above) > 10, n + 1


# ==================================================================================================
# The lock
def lock_mismatches(dependencies: list[str], lock: Mapping[str, Locked]) -> list[str]:
    """How the lock disagrees with pyproject.toml's dependencies (empty: it agrees)."""
    problems = []
    for spec in dependencies:
        req = Requirement(spec)
        pins = [s for s in req.specifier if s.operator == "=="]
        if len(pins) != 1 or len(req.specifier) != 1:
            problems.append(f"{spec}: pyproject.toml pins exact versions (name==version)")
            continue
        locked = lock.get(canonicalize_name(req.name))
        if locked is None:
            problems.append(f"{req.name} is missing from the lock: run `make lock`")
        elif locked.version != pins[0].version:
            problems.append(
                f"{req.name}: {locked.version} in the lock, {pins[0].version} in pyproject.toml: `make lock`"
            )
    return problems


def image_dependencies(*extras: str) -> list[str]:
    """What an image holds: the package's dependencies and the named optional groups (none named:
    every group but dev); ``moby[...]`` entries (groups made of groups) are not packages."""
    groups = PYPROJECT["project"].get("optional-dependencies", {})
    chosen = extras or [g for g in groups if g != "dev"]
    return [
        *PYPROJECT["project"]["dependencies"],
        *(d for g in chosen for d in groups[g] if not d.startswith("moby[")),
    ]


def test_the_lock_pins_what_pyproject_pins() -> None:
    assert lock_mismatches(image_dependencies(), read_lock(LOCK)) == []


def test_the_edge_lock_pins_the_agent_and_nothing_of_the_server() -> None:
    edge = read_lock(EDGE_LOCK)
    assert lock_mismatches(image_dependencies("edge"), edge) == []
    server_only = {d.split("==")[0].lower() for d in PYPROJECT["project"]["optional-dependencies"]["server"]}
    assert not server_only & set(edge), sorted(server_only & set(edge))


def test_a_stale_lock_is_caught(tmp_path: Path) -> None:
    deps = PYPROJECT["project"]["dependencies"]
    pydantic = read_lock(LOCK)["pydantic"].version
    stale = tmp_path / "moby.txt"
    stale.write_text(LOCK.read_text().replace(f"pydantic=={pydantic} ", "pydantic==0.0.1 "))
    (problem,) = lock_mismatches(deps, read_lock(stale))
    assert problem.startswith("pydantic: 0.0.1 in the lock") and "make lock" in problem
    (problem,) = lock_mismatches([*deps, "left-pad==1.0"], read_lock(LOCK))
    assert problem == "left-pad is missing from the lock: run `make lock`"
    (problem,) = lock_mismatches(["pydantic>=2"], read_lock(LOCK))
    assert "pins exact versions" in problem


@pytest.mark.parametrize("path", [LOCK, EDGE_LOCK, BUILD_LOCK], ids=lambda p: p.name)
def test_every_locked_package_is_exact_and_hash_pinned(path: Path) -> None:
    entries = read_lock(path)
    assert entries
    assert "#    make lock" in path.read_text()  # how to regenerate it
    for name, locked in entries.items():
        (pin,) = locked.requirement.specifier
        assert pin.operator == "==" and locked.requirement.url is None, name
        assert locked.hashes, f"{name} has no hash"


def test_the_build_lock_holds_the_build_system() -> None:
    requires = PYPROJECT["build-system"]["requires"]
    assert (ROOT / "requirements/build.in").read_text().split() == requires
    lock = read_lock(BUILD_LOCK)
    for spec in requires:
        req = Requirement(spec)
        locked = lock[canonicalize_name(req.name)]
        assert req.specifier.contains(locked.version), (spec, locked.version)


def test_the_lock_reader_sees_a_stale_pin() -> None:
    """The check above fails when pyproject and the lock disagree (a lock left stale)."""
    lock = read_lock(LOCK)
    pydantic = lock["pydantic"]
    bumped = LOCK.read_text().replace(f"pydantic=={pydantic.version} ", "pydantic==0.0.1 ")
    stale = Path(os.environ.get("TMPDIR", "/tmp")) / f"moby-stale-lock-{os.getpid()}.txt"
    stale.write_text(bumped)
    try:
        assert read_lock(stale)["pydantic"].version == "0.0.1"
        assert read_lock(stale)["pydantic"].hashes == pydantic.hashes
    finally:
        stale.unlink()


# ==================================================================================================
# .dockerignore
def test_the_build_context_is_what_the_dockerfile_copies() -> None:
    rules = dockerignore()
    sources = copied_sources()
    assert {"requirements", "pyproject.toml", "README.md", "src", "deploy/image/healthcheck.py"} <= set(
        sources
    )
    for source in sources:
        assert (ROOT / source).exists(), source
    junk = re.compile(r"(^|/)__pycache__/|\.pyc$|\.egg-info(/|$)")
    for path in repo_files():
        wanted = any(path == s or path.startswith(s + "/") for s in sources) and not junk.search(path)
        assert in_context(path, rules) == wanted, path
    for outside in (
        "var/queue.sqlite",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_x.py",
        "bench/results/latest.json",
        "deploy/emqx/secrets/api-tokens/api-tokens.json",
        "src/moby/__pycache__/cli.cpython-311.pyc",
        "src/moby.egg-info/PKG-INFO",
    ):
        assert not in_context(outside, rules), outside


def test_the_dockerignore_reader_follows_dockers_rules() -> None:
    rules = [(False, _glob("*")), (True, _glob("src")), (False, _glob("**/__pycache__"))]
    assert in_context("src/moby/cli.py", rules)
    assert not in_context("var/x", rules) and not in_context("README.md", rules)
    assert not in_context("src/moby/__pycache__/cli.pyc", rules)
    assert in_context("deep/er/file", [(False, _glob("*")), (True, _glob("deep/er/file"))])


# ==================================================================================================
# Compose files
def test_there_are_compose_files_to_check() -> None:
    names = {p.relative_to(DEPLOY).as_posix() for p in compose_files()}
    assert {"emqx/docker-compose.yml", "grafana/docker-compose.yml"} <= names


@pytest.mark.parametrize("path", compose_files(), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_every_compose_file_uses_our_image_or_pinned_public_ones(path: Path) -> None:
    assert compose_problems(load(path), path) == []


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"image": "haproxy"}, "no version"),
        ({"image": "haproxy:latest"}, "no version"),
        ({"image": "haproxy:2.9"}, "not an exact release"),
        ({"image": "postgres:16"}, "not an exact release"),
        ({"image": "influxdb:1.8-alpine"}, "not an exact release"),
        ({"image": "moby:0.1.0"}, "nothing builds"),
        ({"image": "moby:latest"}, "nothing builds"),
        ({"build": {"context": "."}, "image": f"moby:{VERSION}"}, "not the repository's Dockerfile"),
        ({"build": {"context": "../..", "target": "build"}, "image": "x"}, "not one of the Dockerfile's"),
        ({"build": {"context": "../.."}, "image": "moby:latest"}, f"tag the image moby:{VERSION}"),
        ({"build": {"context": "../..", "target": "edge"}, "image": f"moby:{VERSION}"}, "moby-edge:"),
        ({"build": "../..", "image": f"moby:{VERSION}", "command": ["moby", "serve"]}, "moby command"),
        ({"image": "haproxy:2.9.15", "environment": {"MOBY_API_HOTS": "x"}}, "MOBY_API_HOTS is not"),
        ({"image": "haproxy:2.9.15", "environment": ["MOBY_DATADIR=/x"]}, "MOBY_DATADIR is not"),
        ({}, "neither an image nor a build"),
    ],
)
def test_each_compose_rule_catches_its_mistake(service: dict[str, Any], expected: str) -> None:
    where = DEPLOY / "example" / "docker-compose.yml"
    problems = compose_problems({"services": {"svc": service}}, where)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    "service",
    [
        {"image": "haproxy:2.9.15"},
        {"image": "postgres:16.15"},
        {"image": "emqx/emqx:5.8.6"},
        {"image": "influxdb:1.8.10-alpine"},
        {"image": "python:3.11.16-slim-bookworm@sha256:" + "a" * 64},
        {"build": {"context": "../..", "target": "server"}, "image": f"moby:{VERSION}", "command": "serve"},
        {"build": {"context": "../..", "target": "edge"}, "image": f"moby-edge:{VERSION}"},
        {"image": "grafana/grafana-oss:11.6.0", "environment": {"MOBY_GRAFANA_TOKEN": "x", "GF_X": "y"}},
    ],
)
def test_what_the_rules_accept(service: dict[str, Any]) -> None:
    assert compose_problems({"services": {"svc": service}}, DEPLOY / "example" / "docker-compose.yml") == []


def test_backends_see_token_changes_through_a_folder_mount() -> None:
    """MOBY replaces the token file by renaming a new one over it: a container that bind-mounts
    the file itself keeps the old one (its inode) forever, so a revoked token would stay valid."""
    for path in compose_files():
        for name, service in load(path)["services"].items():
            tokens = environment(service).get("MOBY_API_TOKENS_FILE")
            if tokens is None:
                continue
            targets = [v.split(":")[1] for v in service.get("volumes", []) if isinstance(v, str)]
            assert tokens not in targets, f"{path.name}: {name} mounts the token file itself"
            assert posixpath.dirname(tokens) in targets, f"{path.name}: {name}: mount the file's folder"


def test_the_grafana_deployment_reaches_the_backends_by_the_names_it_uses() -> None:
    grafana = load(DEPLOY / "grafana" / "docker-compose.yml")
    emqx = load(DEPLOY / "emqx" / "docker-compose.yml")
    (external,) = [n for n, net in grafana["networks"].items() if (net or {}).get("external")]
    assert emqx["networks"][external]["name"] == external
    for name, service in emqx["services"].items():
        if "build" in service:
            assert "moby-api" in service["networks"][external]["aliases"], name
            assert "moby-api" in environment(service)["MOBY_API_ALLOWED_HOSTS"].split(",")
    assert "http://moby-api:8000" in (DEPLOY / "grafana" / "docker-compose.yml").read_text()


def test_every_mention_of_the_image_names_this_version() -> None:
    """A tag in a comment or the docs that went stale would send a user to an image nobody built."""
    texts = [p for p in DEPLOY.rglob("*") if p.is_file()]
    texts += [ROOT / "Dockerfile", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    seen = 0
    for path in texts:
        text = path.read_text(errors="replace")
        # not a host name such as emqx1.moby:8883
        for match in re.finditer(r"(?<![\w.@/-])moby(?:-edge)?:([0-9][\w.-]*|latest)\b", text):
            seen += 1
            assert match.group(1) == VERSION, f"{path.relative_to(ROOT)}: {match.group(0)}"
    assert seen >= 5


def test_every_moby_variable_a_command_passes_is_known() -> None:
    """`-e MOBY_X=...` in the commands the deploy files and docs show."""
    texts = [p for p in DEPLOY.rglob("*") if p.is_file()] + [ROOT / "docs" / "DEPLOY.md"]
    for path in texts:
        names = re.findall(r"(?:-e|--env)[ =](MOBY_[A-Z0-9_]+)=", path.read_text(errors="replace"))
        assert unknown_variables(dict.fromkeys(names, "")) == [], path
