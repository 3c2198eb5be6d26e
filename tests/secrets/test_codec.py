"""The payload codec: secrets encrypted, everything else plain JSON; keys, rotation, refusals; the models."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pydantic
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from jobctl.client import check_secrets, start_job
from jobctl.codec import (
    CodecKeyError,
    SecretsCodec,
    SecretsNotEncrypted,
    data_converter,
    generate_key,
    key_id,
    parse_keys,
)
from jobctl.models import Job, JobStatus, UpdateRequest

SECRET = "s3cr3t-db-password-7f3a"
KEY, OLD_KEY = generate_key(), generate_key()


def dataflow_job(secrets: dict[str, str] | None = None, kind: str = "FLEX_TEMPLATE") -> Job:
    path = {"containerSpecGcsPath": "gs://b/t.json"} if kind == "FLEX_TEMPLATE" else {"gcsPath": "gs://b/t"}
    return Job.model_validate(
        {
            "metadata": {"name": "orders"},
            "spec": {
                "engine": "DATAFLOW",
                "deploymentTargetName": "dataflow-local",
                "artifact": {
                    "kind": kind,
                    "jobName": "orders",
                    **path,
                    "parameters": {"input": "gs://b/in"},
                    "secretParameters": secrets if secrets is not None else {"dbPassword": SECRET},
                },
            },
        }
    )


async def encode(value: Any, keys: list[str]) -> Payload:
    return (await data_converter(keys).encode([value]))[0]


async def test_a_job_with_secrets_is_encrypted_and_round_trips() -> None:
    job = dataflow_job()
    payload = await encode(job, [KEY])
    assert payload.metadata["encoding"] == b"binary/encrypted"
    assert payload.metadata["encryption-key-id"] == key_id(KEY).encode()
    assert SECRET.encode() not in payload.SerializeToString()
    assert b"dbPassword" not in payload.SerializeToString()  # the whole payload, names too
    (decoded,) = await data_converter([KEY]).decode([payload], [Job])
    assert decoded == job
    assert decoded.spec.artifact.launch_parameters() == {"input": "gs://b/in", "dbPassword": SECRET}


@pytest.mark.parametrize(
    "value",
    [
        dataflow_job(secrets={}),  # no secrets: the Job stays readable in the web UI
        dataflow_job().redacted(),  # "***" only: what the `job` query returns
        JobStatus(),
        "secretParameters is only a word here",
        {"secretParameters": "not an object"},
        None,
    ],
    ids=["no-secrets", "redacted", "status", "string", "not-an-object", "none"],
)
async def test_payloads_without_secrets_stay_plain_json(value: Any) -> None:
    plain = (await pydantic_data_converter.encode([value]))[0]
    for keys in ([KEY], []):
        assert await encode(value, keys) == plain
    assert plain.metadata["encoding"] != b"binary/encrypted"


async def test_snake_case_and_nested_secrets_are_found() -> None:
    raw = {"spec": {"artifact": {"secret_parameters": {"token": SECRET}}}}
    assert (await encode(raw, [KEY])).metadata["encoding"] == b"binary/encrypted"
    update = UpdateRequest(spec=dataflow_job().spec)
    assert (await encode(update, [KEY])).metadata["encoding"] == b"binary/encrypted"
    assert (await encode([1, raw], [KEY])).metadata["encoding"] == b"binary/encrypted"


async def test_key_rotation_new_key_first_old_keys_still_decrypt() -> None:
    old = await encode(dataflow_job(), [OLD_KEY])
    rotated = data_converter([KEY, OLD_KEY])
    (decoded,) = await rotated.decode([old], [Job])
    assert decoded.spec.secret_values == {"dbPassword": SECRET}
    new = (await rotated.encode([decoded]))[0]
    assert new.metadata["encryption-key-id"] == key_id(KEY).encode()
    with pytest.raises(SecretsNotEncrypted, match=f"encrypted with key {key_id(OLD_KEY)}, which is not in"):
        await data_converter([KEY]).decode([old], [Job])


async def test_without_a_key_secrets_are_refused_not_written() -> None:
    with pytest.raises(SecretsNotEncrypted, match="JOBCTL_CODEC_KEY is not set") as err:
        await encode(dataflow_job(), [])
    assert SECRET not in str(err.value)
    encrypted = await encode(dataflow_job(), [KEY])
    with pytest.raises(SecretsNotEncrypted, match=f"encrypted .*key {key_id(KEY)}.* JOBCTL_CODEC_KEY is not set"):
        await data_converter([]).decode([encrypted], [Job])


@pytest.mark.parametrize("keys", [[KEY], []], ids=["with-key", "without-key"])
async def test_plaintext_secrets_arriving_are_redacted_never_passed_on(keys: list[str]) -> None:
    """What `temporal workflow start --input '{...secretParameters...}'` sends: the worker sees "***"."""
    plain = (await pydantic_data_converter.encode([dataflow_job()]))[0]
    (decoded,) = await data_converter(keys).decode([plain], [Job])
    assert decoded.spec.secret_values == {"dbPassword": "***"}
    assert decoded.spec.unusable_secrets() == ["dbPassword"]
    assert decoded.spec.artifact.parameters == {"input": "gs://b/in"}


def test_keys_parse_and_a_bad_key_is_named_not_shown() -> None:
    assert parse_keys(f" {KEY} , {OLD_KEY},") == [KEY, OLD_KEY]
    assert parse_keys(None) == parse_keys("") == []
    with pytest.raises(CodecKeyError, match="key #2 is not a Fernet key") as err:
        parse_keys(f"{KEY},not-a-key-but-secret")
    assert "not-a-key-but-secret" not in str(err.value)
    assert SecretsCodec([KEY]).can_encrypt and not SecretsCodec().can_encrypt


def test_secret_parameters_in_the_models() -> None:
    job = dataflow_job()
    redacted = job.redacted()
    assert redacted.spec.secret_values == {"dbPassword": "***"}
    assert job.spec.secret_values == {"dbPassword": SECRET}  # the original is untouched
    assert SECRET not in redacted.model_dump_json()
    assert dataflow_job(kind="CLASSIC_TEMPLATE").spec.artifact.launch_parameters()["dbPassword"] == SECRET
    with pytest.raises(pydantic.ValidationError, match="input given both in parameters and in secretParameters"):
        dataflow_job(secrets={"input": SECRET})
    # Validation errors end up in history (workflow failures, REJECTED events): they never repeat the input.
    raw = json.loads(job.model_dump_json())
    raw["spec"]["parallelism"] = 0
    with pytest.raises(pydantic.ValidationError) as err:
        Job.model_validate(raw)
    assert SECRET not in str(err.value) and SECRET not in repr(err.value.errors())


async def test_start_job_refuses_secrets_it_cannot_encrypt() -> None:
    """Refused before anything reaches Temporal (the client object is never used)."""
    no_key = SimpleNamespace(data_converter=pydantic_data_converter)
    with pytest.raises(SecretsNotEncrypted, match="JOBCTL_CODEC_KEY is not set"):
        await start_job(no_key, dataflow_job(), "jobctl")  # type: ignore[arg-type]
    with pytest.raises(SecretsNotEncrypted, match="JOBCTL_CODEC_KEY is not set"):
        check_secrets(dataflow_job(), data_converter([]))
    with pytest.raises(SecretsNotEncrypted, match=r'dbPassword hold "\*\*\*"'):
        check_secrets(dataflow_job().redacted(), data_converter([KEY]))
    check_secrets(dataflow_job(), data_converter([KEY]))
    check_secrets(dataflow_job(secrets={}), pydantic_data_converter)
