import json
import sys
from pathlib import Path

import pytest

from harness.models import expected_linear, make_model_dir
from mme.errors import ModelLoadError
from mme.handler_service import HandlerService
from mme.worker_config import WorkerConfig
from tests.fakes import FakeContext

JSON = "application/json"


pytestmark = pytest.mark.usefixtures("restore_import_state")


def load(model_dir: Path, max_payload_bytes: int = 1 << 20) -> tuple[HandlerService, FakeContext]:
    service = HandlerService(WorkerConfig(max_payload_bytes=max_payload_bytes))
    context = FakeContext(str(model_dir))
    service.initialize(context)
    return service, context


def invoke(
    service: HandlerService, context: FakeContext, body: bytes | None, **headers: str
) -> tuple[int, str, object]:
    [answer] = service.handle([{"body": body}], context.with_request(**headers))
    status = context.status[0] if context.status else 200
    return status, context.content_types.get(0, ""), answer


def test_defaults_serve_a_bare_torchscript_model(tmp_path: Path) -> None:
    service, context = load(make_model_dir(tmp_path, "bare"))
    status, content_type, body = invoke(
        service, context, b"[[1, 2, 3]]", **{"Content-Type": JSON, "Accept": JSON}
    )
    assert (status, content_type) == (200, JSON)
    assert json.loads(str(body)) == expected_linear([[1, 2, 3]])


def test_user_functions_get_the_request_headers_through_context(tmp_path: Path) -> None:
    code = """
        import json
        def model_fn(model_dir):
            return "model"
        def input_fn(body, content_type, context):
            headers = context.request_processor[0].get_request_properties()
            return {
                "custom": headers.get("X-Amzn-SageMaker-Custom-Attributes"),
                "target": headers.get("X-Amzn-SageMaker-Target-Model"),
            }
        def predict_fn(data, model):
            return data
        def output_fn(prediction, accept):
            return json.dumps(prediction), "application/json"
    """
    service, context = load(make_model_dir(tmp_path, "ctx", {"inference.py": code}, False))
    status, _, body = invoke(
        service,
        context,
        b"{}",
        **{
            "Content-Type": JSON,
            "X-Amzn-SageMaker-Custom-Attributes": "trace=1",
            "X-Amzn-SageMaker-Target-Model": "team/a.tar.gz",
        },
    )
    assert status == 200
    assert json.loads(str(body)) == {"custom": "trace=1", "target": "team/a.tar.gz"}


def test_transform_fn_style(tmp_path: Path) -> None:
    code = """
        def model_fn(model_dir, context):
            return 10
        def transform_fn(model, data, content_type, accept):
            return str(model + len(data)), "text/plain"
    """
    service, context = load(make_model_dir(tmp_path, "tf", {"inference.py": code}, False))
    assert invoke(service, context, b"abc", **{"Content-Type": "application/octet-stream"}) == (
        200,
        "text/plain",
        "13",
    )


def test_transform_fn_mixed_with_input_fn_fails_the_load_clearly(tmp_path: Path) -> None:
    code = """
        def model_fn(model_dir):
            return 1
        def transform_fn(model, data, content_type, accept):
            return data
        def input_fn(data, content_type):
            return data
    """
    model_dir = make_model_dir(tmp_path, "mixed", {"inference.py": code}, False)
    with pytest.raises(ModelLoadError, match="transform_fn"):
        load(model_dir)


def test_out_of_memory_in_model_fn_becomes_memory_error(tmp_path: Path) -> None:
    code = """
        import torch
        def model_fn(model_dir):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    """
    model_dir = make_model_dir(tmp_path, "oom", {"inference.py": code}, False)
    with pytest.raises(MemoryError, match="out of memory"):
        load(model_dir)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"[[1, 2", {"Content-Type": JSON}, 400),
        (b"\xff\xfe", {"Content-Type": JSON}, 400),
        (None, {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        (b"[[1, 2, 3]]", {"Content-Type": JSON, "Accept": "image/png"}, 406),
        (b"abc", {"Content-Type": "text/plain"}, 415),
        (b"[[1, 2]]", {"Content-Type": JSON}, 500),  # wrong shape for the model
    ],
)
def test_errors_get_their_status_and_a_short_json_message(
    tmp_path: Path, body: bytes | None, headers: dict[str, str], status: int
) -> None:
    service, context = load(make_model_dir(tmp_path, "err"))
    got_status, content_type, answer = invoke(service, context, body, **headers)
    assert (got_status, content_type) == (status, JSON)
    error = json.loads(str(answer))
    assert error["code"] == status
    assert "Traceback" not in error["message"]
    assert "\n" not in error["message"]
    # the model keeps serving after the error
    assert invoke(service, context, b"[[0, 0, 0]]", **{"Content-Type": JSON})[0] == 200


def test_a_response_over_the_payload_limit_is_413(tmp_path: Path) -> None:
    code = """
        def model_fn(model_dir):
            return None
        def transform_fn(model, data, content_type, accept):
            return "x" * 2000, "text/plain"
    """
    model_dir = make_model_dir(tmp_path, "big", {"inference.py": code}, False)
    service, context = load(model_dir, max_payload_bytes=1000)
    status, _, answer = invoke(service, context, b"", **{"Content-Type": "text/plain"})
    assert status == 413
    assert "SAGEMAKER_MAX_PAYLOAD_IN_MB" in json.loads(str(answer))["message"]


def test_a_module_named_inference_elsewhere_is_never_used(tmp_path: Path) -> None:
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    (elsewhere / "inference.py").write_text("def model_fn(model_dir):\n    raise SystemExit(9)\n")
    sys.path.insert(0, str(elsewhere))
    service, context = load(make_model_dir(tmp_path, "no-code"))  # defaults, not site's model_fn
    assert invoke(service, context, b"[[1, 1, 1]]", **{"Content-Type": JSON})[0] == 200


def test_pre_model_fn_and_model_warmup_fn_run_around_model_fn(tmp_path: Path) -> None:
    code = """
        import json
        calls = []
        def pre_model_fn(model_dir):
            calls.append("pre")
        def model_fn(model_dir):
            calls.append("model")
            return {"warm": False}
        def model_warmup_fn(model_dir, model):
            calls.append("warmup")
            model["warm"] = True
        def transform_fn(model, data, content_type, accept):
            return json.dumps({"calls": calls, "warm": model["warm"]}), "application/json"
    """
    service, context = load(make_model_dir(tmp_path, "warm", {"inference.py": code}, False))
    _, _, body = invoke(service, context, b"", **{"Content-Type": JSON})
    assert json.loads(str(body)) == {"calls": ["pre", "model", "warmup"], "warm": True}
