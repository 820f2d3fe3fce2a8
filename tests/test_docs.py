"""The documentation runs as written: README, docs/policy.md, docs/hardening.md, examples/README.md.

Every ```sh block of those pages runs, top to bottom, in one temporary directory holding a
copy of ``examples/`` (what the README promises), with passphrase-protected keys made the
README's way. A command marked ``# exit N`` must exit N; every other command must exit 0.
Blocks marked ``sh norun`` may hold install commands only (checked below), because
installing is what the surrounding environment already did (tests/test_slim_install.py
builds the slim install itself).

The CI recipes run as their runners would: GitHub workflow steps through ``bash -eo
pipefail`` with ``${{ secrets.* }}`` and ``${{ inputs.* }}`` filled in, the repository's
composite action (action.yml) for ``uses: OWNER/modelguard@...``, and GitLab jobs with the
included template (ci/modelguard-gate.gitlab-ci.yml) merged through ``extends``. Steps that
GitHub provides (``actions/checkout``, ``setup-python``, ``upload-artifact``) and the
``pip install`` lines are the only things not executed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
EXIT_MARK = re.compile(r"\s#\s*exit (\d+)\b")
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")
INSTALL = re.compile(r"^(python -m )?pip install |^make (demo|test)\b")

pytestmark = pytest.mark.slow


def fenced(page: Path, language: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block of ``language`` on the page, in order."""
    return [
        (info.strip(), body)
        for lang, info, body in FENCE.findall(page.read_text())
        if lang == language
    ]


def runnable_sh(page: Path) -> list[str]:
    blocks = []
    for info, body in fenced(page, "sh"):
        if "norun" in info.split():
            for line in body.splitlines():
                command = line.split(" #")[0].strip()
                assert not command or INSTALL.match(command), (
                    f"{page.name}: a 'norun' block may hold install commands only: {line}"
                )
        else:
            blocks.append(body)
    return blocks


def to_script(block: str) -> str:
    """The block as bash, with ``# exit N`` lines checked for exactly that status."""
    out: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        logical = lines[i]
        while logical.endswith("\\") and i + 1 < len(lines):
            i += 1
            logical = logical + "\n" + lines[i]
        i += 1
        heredoc = HEREDOC.search(logical)
        if heredoc:  # copy the body verbatim up to its terminator
            out.append(logical)
            while i < len(lines):
                out.append(lines[i])
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
            continue
        mark = EXIT_MARK.search(logical)
        if mark:
            command = logical[: mark.start()]
            expected = mark.group(1)
            out.append(  # a condition: neither errexit nor the ERR trap fire inside it
                f"if {command}; then __rc=0; else __rc=$?; fi; if [ $__rc -ne {expected} ]; then "
                f"echo 'docs: exit '$__rc' (expected {expected}): '{shlex_quote(command)} >&2; "
                "exit 97; fi"
            )
        else:
            out.append(logical)
    return "\n".join(out) + "\n"


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def bash(script: str, cwd: Path, env: Mapping[str, str], what: str, timeout: int = 600) -> None:
    prologue = "set -eEo pipefail\ntrap 'echo \"docs: exit $? at: $BASH_COMMAND\" >&2' ERR\n"
    done = subprocess.run(
        ["bash", "-c", prologue + script],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, (
        f"{what} failed (exit {done.returncode}):\n--- stderr (tail)\n{done.stderr[-4000:]}"
        f"\n--- stdout (tail)\n{done.stdout[-2000:]}"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(
        REPO / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__")
    )
    return work


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELGUARD_")}
    return {
        **base,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
        "HOME": str(workdir / "home"),
        "XDG_CONFIG_HOME": str(workdir / "config"),
        "OMP_NUM_THREADS": "1",
        "MODELGUARD_LEDGER_STATE": str(workdir / "ledger-state"),
    }


def test_readme_runs_as_written(workdir: Path, env: dict[str, str]) -> None:
    script = "".join(to_script(block) for block in runnable_sh(REPO / "README.md"))
    assert "modelguard card" in script and "--ledger-key" in script
    bash(script, workdir, env, "README.md")
    assert (workdir / "model.robustness" / "certificate.sig").is_file()
    assert (workdir / "model-pgd" / "model.sig").is_file()


def _expand(text: str, context: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in context, f"the doc test does not know ${{{{ {name} }}}}"
        return context[name]

    return EXPRESSION.sub(one, text)


def _github_context(workdir: Path) -> dict[str, str]:
    note_pub = workdir / ".modelguard" / "ledger.db.note.pub"
    return {
        "secrets.MODELGUARD_LEDGER_URL": f"sqlite:///{workdir}/.modelguard/ledger.db",
        "vars.MODELGUARD_LEDGER_KEY": note_pub.read_text().strip() if note_pub.is_file() else "",
    }


def run_action(
    inputs: Mapping[str, Any], workdir: Path, env: Mapping[str, str], expect_ok: bool = True
) -> dict[str, str]:
    """action.yml's composite steps, as GitHub runs them; returns its outputs."""
    action = yaml.safe_load((REPO / "action.yml").read_text())
    declared = action["inputs"]
    unknown = set(inputs) - set(declared)
    assert not unknown, f"the workflow passes inputs action.yml does not declare: {unknown}"
    for name, spec in declared.items():
        assert spec.get("description"), f"action input {name} has no description"
        assert spec.get("required") or "default" in spec
    context = {f"inputs.{k}": str(v.get("default", "")) for k, v in declared.items()}
    context.update({f"inputs.{k}": str(v) for k, v in inputs.items()})
    output_file = workdir / "github-output.txt"
    summary_file = workdir / "github-summary.md"
    output_file.write_text("")
    summary_file.write_text("")
    ran_gate = False
    for step in action["runs"]["steps"]:
        if "uses" in step:
            assert step["uses"].startswith("actions/"), step
            continue
        step_env = {k: _expand(str(v), context) for k, v in step.get("env", {}).items()}
        script = _expand(step["run"], context)
        if script.startswith("python -m pip install"):
            assert '"$MG_PACKAGE"' in script
            continue
        full = {
            **env,
            **step_env,
            "GITHUB_OUTPUT": str(output_file),
            "GITHUB_STEP_SUMMARY": str(summary_file),
        }
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=workdir,
            env=full,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert (done.returncode == 0) is expect_ok, done.stderr[-3000:]
        ran_gate = True
    assert ran_gate
    outputs = dict(
        line.split("=", 1) for line in output_file.read_text().splitlines() if "=" in line
    )
    outputs["summary"] = summary_file.read_text()
    return outputs


def run_workflow(text: str, workdir: Path, env: Mapping[str, str]) -> list[dict[str, str]]:
    """A GitHub workflow's jobs in order; returns the outputs of every action step."""
    workflow = yaml.safe_load(text)
    context = _github_context(workdir)
    action_outputs = []
    for job in workflow["jobs"].values():
        job_env = {k: _expand(str(v), context) for k, v in job.get("env", {}).items()}
        for step in job["steps"]:
            if "uses" in step:
                uses = step["uses"]
                if uses.startswith("actions/"):
                    continue  # provided by GitHub: checkout, setup-python, upload-artifact
                assert re.fullmatch(r"[\w-]+/modelguard@[\w.-]+", uses), uses
                inputs = {k: _expand(str(v), context) for k, v in step.get("with", {}).items()}
                action_outputs.append(run_action(inputs, workdir, {**env, **job_env}))
                continue
            script = _expand(step["run"], context)
            lines = [line for line in script.splitlines() if not INSTALL.match(line.strip())]
            step_env = {k: _expand(str(v), context) for k, v in step.get("env", {}).items()}
            bash(
                "\n".join(lines), workdir, {**env, **job_env, **step_env}, step.get("name", "step")
            )
    return action_outputs


def run_gitlab(
    text: str, workdir: Path, env: Mapping[str, str], project: Mapping[str, str]
) -> None:
    """A .gitlab-ci.yml with the repository's template included, jobs in stage order."""
    pipeline = yaml.safe_load(text)
    templates: dict[str, Any] = {}
    for include in pipeline.pop("include", []):
        assert include["remote"].endswith("/ci/modelguard-gate.gitlab-ci.yml"), include
        templates.update(
            yaml.safe_load((REPO / "ci" / "modelguard-gate.gitlab-ci.yml").read_text())
        )
    stages = pipeline.pop("stages")
    jobs = {k: v for k, v in pipeline.items() if isinstance(v, dict) and not k.startswith(".")}
    for name, job in sorted(jobs.items(), key=lambda item: stages.index(item[1]["stage"])):
        merged: dict[str, Any] = {}
        for parent in (
            [job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends", [])
        ):
            merged.update(templates[parent])
        variables = {**merged.get("variables", {}), **job.get("variables", {})}
        merged.update(job)
        job_env = {**env, **project}
        for key, value in variables.items():
            job_env[key] = os.path.expandvars(str(value)) if "$" in str(value) else str(value)
        lines = [*merged.get("before_script", []), *merged["script"]]
        for line in lines:
            if INSTALL.match(line.strip()):
                assert "$MODELGUARD_PACKAGE" in line
                continue
            bash(line, workdir, job_env, f"GitLab job {name}")
        for path in merged.get("artifacts", {}).get("paths", []):
            resolved = re.sub(r"\$(\w+)", lambda m, e=job_env: e.get(m.group(1), ""), path)
            assert (workdir / resolved).exists(), f"GitLab job {name}: artifact {path} missing"


def test_policy_and_hardening_recipes_run(workdir: Path, env: dict[str, str]) -> None:
    policy_md = REPO / "docs" / "policy.md"
    layout, signing = runnable_sh(policy_md)
    bash(to_script(layout), workdir, env, "docs/policy.md: repository layout")

    github, gitlab = (body for _, body in fenced(policy_md, "yaml"))
    outputs = run_workflow(github, workdir, env)
    assert outputs and outputs[0]["ok"] == "true"
    assert "VERIFIED" in outputs[0]["summary"]
    assert (workdir / "verify-report.json").is_file()

    ledger = f"sqlite:///{workdir}/.modelguard/ledger.db"
    project = {"MODELGUARD_LEDGER": ledger, "MODELGUARD_LEDGER_KEY": "deploy/ledger.note.pub"}
    run_gitlab(gitlab, workdir, env, project)

    (recertify,) = (body for _, body in fenced(REPO / "docs" / "hardening.md", "yaml"))
    run_workflow(recertify, workdir, env)
    assert (workdir / "recertify-digits.json").is_file()

    secrets = {
        "MODEL_SIGNING_KEY": (workdir / "keys" / "modelguard.priv").read_text(),
        "MODEL_SIGNING_PASS": env.get("MG_PASS", "correct horse battery staple"),
        "RUNNER_TEMP": str(workdir / "runner-temp"),
        "GITHUB_REF_NAME": "3",
        "MODELGUARD_LEDGER": ledger,
    }
    (workdir / "runner-temp").mkdir(exist_ok=True)
    bash(to_script(signing), workdir, {**env, **secrets}, "docs/policy.md: signing in CI")


def test_action_refuses_a_tampered_model(workdir: Path, env: dict[str, str]) -> None:
    shutil.copytree(workdir / "models" / "digits", workdir / "models" / "tampered")
    weights = workdir / "models" / "tampered" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    outputs = run_action(
        {"model": "models/tampered", "policy": "deploy/policy.toml", "report": "tampered.json"},
        workdir,
        env,
        expect_ok=False,
    )
    assert outputs["ok"] == "false"
    assert "REFUSED" in outputs["summary"]


def test_examples_readme_runs_as_written(workdir: Path, env: dict[str, str]) -> None:
    script = "".join(to_script(block) for block in runnable_sh(REPO / "examples" / "README.md"))
    bash(script, workdir, env, "examples/README.md")
    assert (workdir / "hf-model" / "model.safetensors.index.json").is_file()


def test_exit_marks_are_enforced(tmp_path: Path) -> None:
    """The runner itself: a command that does not exit as documented fails the page."""
    with pytest.raises(AssertionError, match="expected 1"):
        bash(to_script("true   # exit 1\n"), tmp_path, os.environ, "self-check")
    with pytest.raises(AssertionError):
        bash(to_script("false\n"), tmp_path, os.environ, "self-check")
    bash(
        to_script("false   # exit 1\ncat > x <<'EOF'\nfalse   # exit 1\nEOF\n"),
        tmp_path,
        os.environ,
        "ok",
    )
    assert (tmp_path / "x").read_text() == "false   # exit 1\n"
