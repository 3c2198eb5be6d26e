"""`jobctl` and secrets: a key to generate, refusals before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner, Result

from jobctl.cli import app

runner = CliRunner()
SECRET = "s3cr3t-db-password-7f3a"


def said(result: Result) -> str:
    """What jobctl printed on stderr, unwrapped (rich wraps long lines)."""
    return " ".join(result.stderr.split())


def job_file(tmp_path: Path, secret: str = SECRET) -> Path:
    path = tmp_path / "job.yaml"
    artifact = {
        "kind": "FLEX_TEMPLATE",
        "jobName": "orders",
        "containerSpecGcsPath": "gs://b/t.json",
        "secretParameters": {"dbPassword": secret},
    }
    path.write_text(yaml.safe_dump({"spec": {"engine": "DATAFLOW", "deploymentTargetName": "d", "artifact": artifact}}))
    return path


def test_codec_key_prints_a_fernet_key() -> None:
    result = runner.invoke(app, ["codec-key"])
    assert result.exit_code == 0
    Fernet(result.stdout.strip())


def test_start_without_a_key_is_refused_before_connecting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCTL_CODEC_KEY", raising=False)
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")  # nothing listens: a connection attempt would say so
    result = runner.invoke(app, ["start", str(job_file(tmp_path))])
    assert result.exit_code == 1
    assert "JOBCTL_CODEC_KEY is not set" in said(result)
    assert "cannot reach Temporal" not in said(result)
    assert SECRET not in result.output


def test_start_with_redacted_secrets_or_a_bad_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCTL_CODEC_KEY", Fernet.generate_key().decode())
    result = runner.invoke(app, ["start", str(job_file(tmp_path, "***"))])
    assert result.exit_code == 1 and "give their real values" in said(result)
    monkeypatch.setenv("JOBCTL_CODEC_KEY", "short-and-wrong")
    result = runner.invoke(app, ["start", str(job_file(tmp_path))])
    assert result.exit_code == 1 and "key #1 is not a Fernet key" in said(result)
    assert "short-and-wrong" not in result.output
