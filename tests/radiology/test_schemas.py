"""The API's typed contracts: /api/openapi.json documents what every endpoint
returns, real answers have exactly the documented shape, and the management
commands print the same JSON as the API."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from dicomio.synthetic import phantom_volume, write_series
from radiology.services.ingest import upload_ingest
from radiology.services.jobs import denoise_job_request, denoise_job_run
from tests.conftest import install_tiny_models

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tmp_path):
    return install_tiny_models(settings, tmp_path / "models")


@pytest.fixture
def series_folder(tmp_path):
    folder = tmp_path / "s"
    write_series(folder, phantom_volume((4, 32, 32), seed=3), spacing_mm=(2, 1, 1))
    (folder / "notes.txt").write_text("not DICOM")
    return folder


@pytest.fixture
def series(alice, series_folder):
    return upload_ingest(sources=[(series_folder, "s")], owner=alice).series[0]


@pytest.fixture
def openapi(client, alice):
    client.force_login(alice)
    return client.get("/api/openapi.json").json()


def _resolve(schema: dict, openapi: dict) -> dict:
    while "$ref" in schema or "allOf" in schema:
        if "allOf" in schema:
            (schema,) = schema["allOf"]
            continue
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = openapi["components"]["schemas"][name]
    return schema


def assert_shape(value, schema: dict, openapi: dict, where: str = "$") -> None:
    """``value`` has exactly the documented keys, at every level that names its
    properties (free-form ``dict`` fields are only checked to be objects; a
    stored record, which allows more keys, has its required ones and its
    documented ones as documented)."""
    schema = _resolve(schema, openapi)
    if "anyOf" in schema:
        if value is None:
            assert {"type": "null"} in schema["anyOf"], f"{where} is null"
            return
        (schema,) = [s for s in schema["anyOf"] if s != {"type": "null"}]
        schema = _resolve(schema, openapi)
    if "enum" in schema:
        assert value in schema["enum"], where
        return
    kind = schema.get("type")
    if kind == "array":
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            assert_shape(item, schema["items"], openapi, f"{where}[{index}]")
    elif kind == "object":
        assert isinstance(value, dict), where
        if "properties" in schema:
            if schema.get("additionalProperties") is True:
                assert set(schema.get("required", [])) <= set(value), where
            else:
                assert set(value) == set(schema["properties"]), where
            for key, item in value.items():
                if key in schema["properties"]:
                    assert_shape(
                        item, schema["properties"][key], openapi, f"{where}.{key}"
                    )
    elif kind is not None:
        python = {
            "string": str,
            "integer": int,
            "number": (int, float),
            "boolean": bool,
        }[kind]
        assert isinstance(value, python), f"{where}: {value!r} is not {kind}"
        assert kind == "boolean" or not isinstance(value, bool), where


def response_schema(openapi: dict, method: str, path: str, status: int) -> dict:
    content = openapi["paths"][path][method]["responses"][str(status)]["content"]
    return content["application/json"]["schema"]


def test_every_endpoint_documents_what_it_returns(openapi):
    undocumented = []
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            successes = {
                code: answer
                for code, answer in operation["responses"].items()
                if code.startswith("2")
            }
            assert successes, f"{method} {path}"
            for code, answer in successes.items():
                content = answer.get("content", {})
                json_schema = content.get("application/json", {}).get("schema")
                if json_schema is None:
                    # Bytes (volumes, thumbnails, zips) say their media type.
                    if not any(
                        media.get("schema", {}).get("format") == "binary"
                        for media in content.values()
                    ):
                        undocumented.append(f"{method.upper()} {path} {code}")
                    continue
                if json_schema.get("type") == "array":
                    json_schema = json_schema["items"]
                if "properties" not in _resolve(json_schema, openapi):
                    undocumented.append(f"{method.upper()} {path} {code}")
    assert undocumented == []


def test_refusals_are_documented_as_errors(openapi):
    error = {"$ref": "#/components/schemas/ErrorOut"}
    assert openapi["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    for path, method, status in [
        ("/api/uploads", "post", 413),
        ("/api/series/{series_id}", "get", 404),
        ("/api/series/{series_id}/denoise", "post", 400),
        ("/api/jobs/{job_id}/review", "post", 400),
        ("/api/models/finetune", "post", 403),
        ("/api/jobs/{job_id}/export.zip", "get", 409),
    ]:
        assert response_schema(openapi, method, path, status) == error, path


def test_series_job_review_and_audit_answers_have_the_documented_shape(
    client, openapi, alice, series, models_root
):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    denoise_job_run(job_id=job.pk)
    review = client.post(
        f"/api/jobs/{job.pk}/review",
        {"verdict": "accept", "comment": "fine", "measurements": []},
        content_type="application/json",
    )
    assert review.status_code == 201
    assert_shape(
        review.json(),
        response_schema(openapi, "post", "/api/jobs/{job_id}/review", 201),
        openapi,
    )
    for path, documented in [
        ("/api/series", "/api/series"),
        (f"/api/series/{series.pk}", "/api/series/{series_id}"),
        (f"/api/jobs/{job.pk}", "/api/jobs/{job_id}"),
        ("/api/audit", "/api/audit"),
        ("/api/models", "/api/models"),
    ]:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert_shape(
            answer.json(), response_schema(openapi, "get", documented, 200), openapi
        )
    detail = client.get(f"/api/series/{series.pk}").json()
    assert detail["jobs"][0]["reviews"][0]["verdict"] == "accept"
    assert detail["study_series"] == [
        {
            "id": series.pk,
            "modality": "CT",
            "description": series.description,
            "shape": [4, 32, 32],
            "compare_job": job.pk,
        }
    ]


def test_openapi_documents_a_jobs_records(openapi):
    job = openapi["components"]["schemas"]["JobOut"]["properties"]
    provenance = _resolve(job["provenance"], openapi)
    assert provenance["additionalProperties"] is True
    assert "required" not in provenance
    assert {
        "schema",
        "model",
        "code",
        "hardware",
        "precision",
        "parameters",
        "input_sha256",
        "output_sha256",
        "timings_s",
        "input_volume_sha256",
        "reconstruction_file_sha256",
        "modality_override",
    } <= set(provenance["properties"])
    model = _resolve(provenance["properties"]["model"]["anyOf"][0], openapi)
    assert {"name", "version", "weights_sha256", "training_parent"} <= set(
        model["properties"]
    )
    assert "SHA-256" in model["properties"]["weights_sha256"]["description"]
    code = _resolve(provenance["properties"]["code"]["anyOf"][0], openapi)
    assert {"git_commit", "torch", "monai"} <= set(code["properties"])
    parameters = _resolve(provenance["properties"]["parameters"]["anyOf"][0], openapi)
    assert {"batch_size", "precision_requested", "normalisation"} <= set(
        parameters["properties"]
    )
    params = _resolve(job["params"], openapi)
    assert {"precision", "batch_size", "allow_modality_mismatch"} <= set(
        params["properties"]
    )
    timings = _resolve(job["timings_s"], openapi)
    assert {"load_model", "denoise", "infer", "total"} <= set(timings["properties"])
    metrics = _resolve(job["metrics"], openapi)
    assert metrics["additionalProperties"] is True
    assert {
        "noise_sd_before",
        "noise_sd_after",
        "noise_reduction_ratio",
        "flagged_slices",
        "per_slice",
        "ood",
    } <= set(metrics["properties"])


def test_a_jobs_records_are_answered_as_stored(
    client, openapi, alice, series, models_root
):
    job, _ = denoise_job_request(series=series, requested_by=alice)
    client.force_login(alice)
    queued = client.get(f"/api/jobs/{job.pk}").json()
    assert queued["provenance"] == {} and queued["metrics"] == {}
    denoise_job_run(job_id=job.pk)
    job.refresh_from_db()
    answer = client.get(f"/api/jobs/{job.pk}").json()
    assert answer["provenance"]["model"]["version"] == "1.0.0"
    # Same keys, same order, same numbers (an int stays an int), nothing added.
    for record in ("params", "timings_s", "metrics", "provenance"):
        assert json.dumps(answer[record]) == json.dumps(getattr(job, record)), record
    assert_shape(
        answer, response_schema(openapi, "get", "/api/jobs/{job_id}", 200), openapi
    )
    # A row written by older code (keys missing, other types, keys since
    # dropped) comes back as it was stored too.
    older = {
        "model": {"name": "tiny", "version": "0.9.0"},
        "precision": 32,
        "timings_s": {"total": 1},
        "retired_key": [1, "two", None],
    }
    type(job).objects.filter(pk=job.pk).update(provenance=older, metrics={"n": 1})
    answer = client.get(f"/api/jobs/{job.pk}").json()
    assert json.dumps(answer["provenance"]) == json.dumps(older)
    assert answer["metrics"] == {"n": 1}


def test_upload_token_and_error_answers_have_the_documented_shape(
    client, openapi, series_folder
):
    files = [open(path, "rb") for path in sorted(series_folder.iterdir())]  # noqa: SIM115
    try:
        upload = client.post("/api/uploads", {"files": files})
    finally:
        for handle in files:
            handle.close()
    assert upload.status_code == 201
    assert_shape(
        upload.json(), response_schema(openapi, "post", "/api/uploads", 201), openapi
    )
    (rejected,) = upload.json()["rejected"]
    assert rejected["name"] == "notes.txt" and rejected["duplicate"] is False
    token = client.post(
        "/api/tokens", {"name": "pacs"}, content_type="application/json"
    )
    assert_shape(
        token.json(), response_schema(openapi, "post", "/api/tokens", 201), openapi
    )
    missing = client.get("/api/series/999999")
    assert missing.status_code == 404
    assert_shape(
        missing.json(),
        response_schema(openapi, "get", "/api/series/{series_id}", 404),
        openapi,
    )


def test_denoise_command_prints_the_job_as_the_api_does(
    client, alice, series, models_root, capsys
):
    call_command("denoise", str(series.pk), "--user", "alice", "--json")
    printed = json.loads(capsys.readouterr().out)
    client.force_login(alice)
    assert printed == client.get(f"/api/jobs/{printed['id']}").json()
    assert printed["status"] == "queued" and printed["requested_by"] == "alice"


def test_ingest_command_prints_the_upload_as_the_api_does(
    client, alice, series_folder, capsys
):
    paths = sorted(series_folder.iterdir())
    call_command("ingest", *map(str, paths), "--owner", "alice", "--json")
    printed = json.loads(capsys.readouterr().out)
    # The same files again through the API: the same series, the same refusal.
    files = [open(path, "rb") for path in paths]  # noqa: SIM115
    client.force_login(alice)
    try:
        answer = client.post("/api/uploads", {"files": files}).json()
    finally:
        for handle in files:
            handle.close()
    assert printed["upload"] != answer["upload"]
    del printed["upload"], answer["upload"]
    assert printed == answer
    assert [r["name"] for r in printed["rejected"]] == ["notes.txt"]
    (listed,) = client.get("/api/series").json()
    assert {key: listed[key] for key in printed["series"][0]} == printed["series"][0]


def test_models_command_prints_the_bundles_as_the_api_does(
    client, alice, models_root, capsys
):
    call_command("models", "--json")
    printed = json.loads(capsys.readouterr().out)
    client.force_login(alice)
    assert printed == client.get("/api/models").json()
    assert [(m["name"], m["version"]) for m in printed] == [("tiny", "1.0.0")]
