"""The SageMaker multi-model container API (LOAD, LIST, GET, UNLOAD, INVOKE, /ping), driven as
SageMaker drives it.

Runs against `mme serve` by default, and against the built image with ``--target image``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import requests

from harness.models import expected_linear, jpeg_bytes, make_model_dir
from harness.processes import model_name, on_this_machine
from mme.model_requirements import COMPLETE_MARKER
from tests.requirements.wheels import PACKAGE, build_wheel

JSON = "application/json"
TIMEOUT = 120


def load(server: Any, name: str) -> requests.Response:
    return requests.post(
        f"{server.url}/models",
        json={"model_name": name, "url": server.model_url(name)},
        timeout=TIMEOUT,
    )


def invoke(
    server: Any, name: str, body: bytes, content_type: str = JSON, **headers: str
) -> requests.Response:
    return requests.post(
        f"{server.url}/models/{name}/invoke",
        data=body,
        headers={"Content-Type": content_type, **headers},
        timeout=TIMEOUT,
    )


def listed(server: Any) -> list[str]:
    answer = requests.get(f"{server.url}/models", timeout=TIMEOUT)
    assert answer.status_code == 200
    return [model["modelName"] for model in answer.json()["models"]]


def processes_of(server: Any, name: str) -> list[psutil.Process]:
    """Every live process on this machine started for model ``name`` of ``server``.

    The whole machine, not the server's process tree: a worker whose parent died is
    adopted by init, outside the tree.
    """
    return on_this_machine(lambda args: model_name(args) == name and server.model_url(name) in args)


def loaded(
    server: Any,
    models_root: Path,
    name: str,
    code: dict[str, str] | None = None,
    weights: bool = True,
) -> str:
    """Create the model folder and LOAD it; fail the test unless the LOAD answers 200."""
    make_model_dir(models_root, name, code, weights)
    answer = load(server, name)
    assert answer.status_code == 200, answer.text
    return name


def test_ping_and_an_empty_list(server: Any) -> None:
    assert requests.get(f"{server.url}/ping", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{server.url}/models", timeout=TIMEOUT).status_code == 200


def test_load_invoke_get_list_unload(server: Any, models_root: Path) -> None:
    name = loaded(server, models_root, "linear")
    answer = invoke(server, name, b"[[1, 2, 3], [0, 0, 1]]", Accept=JSON)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith(JSON)
    assert answer.json() == expected_linear([[1, 2, 3], [0, 0, 1]])

    described = requests.get(f"{server.url}/models/{name}", timeout=TIMEOUT)
    assert described.status_code == 200
    body = described.json()
    body = body[0] if isinstance(body, list) else body
    assert (body["modelName"], body["modelUrl"]) == (name, server.model_url(name))
    workers = [worker["id"] for worker in body["workers"]]
    assert workers and all(server.worker_alive(worker) for worker in workers)
    assert name in listed(server)

    assert requests.delete(f"{server.url}/models/{name}", timeout=TIMEOUT).status_code == 200
    assert name not in listed(server)
    assert not any(server.worker_alive(worker) for worker in workers)
    assert invoke(server, name, b"[[1, 2, 3]]").status_code == 404


def test_a_second_load_is_409(server: Any, models_root: Path) -> None:
    name = loaded(server, models_root, "twice")
    again = load(server, name)
    assert again.status_code == 409
    assert invoke(server, name, b"[[1, 1, 1]]").status_code == 200


def test_unknown_models_are_404(server: Any) -> None:
    assert requests.get(f"{server.url}/models/nope", timeout=TIMEOUT).status_code == 404
    assert requests.delete(f"{server.url}/models/nope", timeout=TIMEOUT).status_code == 404
    assert invoke(server, "nope", b"[[1, 2, 3]]").status_code == 404
    missing = requests.post(
        f"{server.url}/models",
        json={"model_name": "ghost", "url": server.model_url("ghost")},
        timeout=TIMEOUT,
    )
    assert missing.status_code == 404
    assert "ghost" not in listed(server)


def test_list_pages_with_next_page_token(server: Any, models_root: Path) -> None:
    for name in ("page-a", "page-b"):
        loaded(server, models_root, name)
    seen: list[str] = []
    token = None
    for _ in range(50):
        params = {"limit": "1", **({"next_page_token": token} if token else {})}
        page = requests.get(f"{server.url}/models", params=params, timeout=TIMEOUT).json()
        assert len(page["models"]) <= 1
        seen += [model["modelName"] for model in page["models"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert {"page-a", "page-b"} <= set(seen)
    assert seen == sorted(seen)


def test_resnet_18_example_returns_top_5(server: Any, resnet_18_dir: Path) -> None:
    assert load(server, "resnet_18").status_code == 200
    answer = invoke(server, "resnet_18", jpeg_bytes(), "application/x-image", Accept=JSON)
    assert answer.status_code == 200, answer.text
    top = answer.json()
    assert len(top) == 5
    probabilities = [entry["probability"] for entry in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities)
    assert all(entry["class"].startswith("n") and " " in entry["class"] for entry in top)
    png = invoke(server, "resnet_18", b"not an image", "application/x-image")
    assert png.status_code == 400
    assert invoke(server, "resnet_18", b"{}", JSON).status_code == 415


def test_models_with_colliding_module_names_each_get_their_own(
    server: Any, models_root: Path
) -> None:
    for name, value in (("collide-a", 1), ("collide-b", 2)):
        code = {
            "inference.py": """
                import json
                from utils import VALUE
                def model_fn(model_dir):
                    return VALUE
                def transform_fn(model, data, content_type, accept):
                    return json.dumps({"value": model}), "application/json"
            """,
            "utils.py": f"VALUE = {value}\n",
        }
        loaded(server, models_root, name, code, weights=False)
    assert invoke(server, "collide-a", b"{}").json() == {"value": 1}
    assert invoke(server, "collide-b", b"{}").json() == {"value": 2}


def test_requirements_install_offline_from_code_lib_without_what_the_server_has(
    server: Any, models_root: Path
) -> None:
    code = {
        "inference.py": """
            import json, os
            import mme_tinydep, torch
            def model_fn(model_dir):
                return os.path.dirname(os.path.dirname(mme_tinydep.__file__))
            def transform_fn(model, data, content_type, accept):
                folder = sorted(os.listdir(model))
                return json.dumps({"version": mme_tinydep.VERSION, "folder": folder,
                                   "torch": torch.__file__}), "application/json"
        """,
        "requirements.txt": f"{PACKAGE}==4.0\n",
    }
    model_dir = make_model_dir(models_root, "with-deps", code, weights=False)
    build_wheel(model_dir / "code" / "lib", "4.0", requires=("torch",))  # the image has torch
    assert load(server, "with-deps").status_code == 200
    answer = invoke(server, "with-deps", b"{}").json()
    assert answer["version"] == "4.0"
    assert answer["folder"] == sorted([COMPLETE_MARKER, PACKAGE, f"{PACKAGE}-4.0.dist-info"])
    assert "/site-packages/torch/" in answer["torch"]


def test_headers_reach_functions_that_take_context(server: Any, models_root: Path) -> None:
    code = {
        "inference.py": """
            import json
            def model_fn(model_dir, context):
                return context.system_properties["model_dir"]
            def transform_fn(model, data, content_type, accept, context):
                headers = context.request_processor[0].get_request_properties()
                lower = {k.lower(): v for k, v in headers.items()}
                return json.dumps({
                    "custom": lower.get("x-amzn-sagemaker-custom-attributes"),
                    "target": lower.get("x-amzn-sagemaker-target-model"),
                }), "application/json"
        """
    }
    name = loaded(server, models_root, "headers", code, weights=False)
    answer = invoke(
        server,
        name,
        b"{}",
        **{
            "X-Amzn-SageMaker-Custom-Attributes": "trace=abc",
            "X-Amzn-SageMaker-Target-Model": "team/model-7.tar.gz",
        },
    )
    assert answer.json() == {"custom": "trace=abc", "target": "team/model-7.tar.gz"}


def test_a_model_that_fails_to_load_is_not_listed_and_disturbs_nothing(
    server: Any, models_root: Path
) -> None:
    healthy = loaded(server, models_root, "bystander")
    make_model_dir(models_root, "broken", {"inference.py": "def model_fn(d):\n    1 / 0\n"})
    answer = load(server, "broken")
    assert answer.status_code == 500
    assert "Traceback" not in answer.text
    assert "ZeroDivisionError: division by zero" in answer.json()["message"]  # why, not only 500
    assert "broken" not in listed(server)  # gone by the time the LOAD is answered
    assert processes_of(server, "broken") == []
    make_model_dir(models_root, "broken", {"inference.py": "def model_fn(d):\n    return 1\n"})
    assert load(server, "broken").status_code == 200  # fixed code loads: nothing was left over
    assert invoke(server, healthy, b"[[1, 2, 3]]").status_code == 200
    assert requests.get(f"{server.url}/ping", timeout=TIMEOUT).json()["status"] == "Healthy"


def test_out_of_memory_is_507_on_load_and_on_invoke(server: Any, models_root: Path) -> None:
    make_model_dir(
        models_root,
        "oom-load",
        {"inference.py": "def model_fn(d):\n    raise MemoryError('40 GiB')\n"},
    )
    refused = load(server, "oom-load")
    assert refused.status_code == 507
    assert "MemoryError: 40 GiB" in refused.json()["message"]
    assert "oom-load" not in listed(server)
    # memory freed, SageMaker retries: the retried LOAD must load, not answer 409
    make_model_dir(models_root, "oom-load", {"inference.py": "def model_fn(d):\n    return 1\n"})
    assert load(server, "oom-load").status_code == 200
    code = {
        "inference.py": """
            import torch
            def model_fn(model_dir):
                return None
            def transform_fn(model, data, content_type, accept):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8 GiB")
        """
    }
    name = loaded(server, models_root, "oom-invoke", code, weights=False)
    answer = invoke(server, name, b"{}")
    assert answer.status_code == 507
    assert "out of memory" in answer.json()["message"]
    assert invoke(server, name, b"{}").status_code == 507  # still loaded, still answering


def test_every_error_status_and_the_model_keeps_serving(server: Any, models_root: Path) -> None:
    name = loaded(server, models_root, "errors")
    cases = [
        (b"[[1, 2", JSON, {}, 400),
        (b"[[1, 2, 3]]", JSON, {"Accept": "image/png"}, 406),
        (b"x" * (1024 * 1024 + 10), JSON, {}, 413),
        (b"1,2,3", "text/plain", {}, 415),
        (b"[[1, 2]]", JSON, {}, 500),
    ]
    for body, content_type, headers, status in cases:
        answer = invoke(server, name, body, content_type, **headers)
        assert answer.status_code == status, (status, answer.text)
        if status != 413:  # MMS itself refuses bodies over max_request_size
            assert "Traceback" not in answer.json()["message"]
        assert invoke(server, name, b"[[1, 2, 3]]").json() == expected_linear([[1, 2, 3]])


def test_invocations_route_needs_a_model_name(server: Any) -> None:
    answer = requests.post(
        f"{server.url}/invocations", data=b"{}", headers={"Content-Type": JSON}, timeout=TIMEOUT
    )
    assert answer.status_code == 400
    assert json.loads(answer.text)["message"]


def test_workers_use_the_configured_torch_threads(server: Any, models_root: Path) -> None:
    code = {
        "inference.py": """
            import json, os, torch
            def model_fn(model_dir):
                return None
            def transform_fn(model, data, content_type, accept):
                return json.dumps({"torch": torch.get_num_threads(),
                                   "omp": os.environ.get("OMP_NUM_THREADS")}), "application/json"
        """
    }
    name = loaded(server, models_root, "threads", code, weights=False)
    assert invoke(server, name, b"{}").json() == {"torch": 2, "omp": "2"}  # MMS alone gives 1


OUT_OF_MEMORY_ONCE = """
    import os
    def model_fn(model_dir):
        flag = os.path.join(model_dir, "out-of-memory-once")
        if os.path.exists(flag):
            os.remove(flag)
            raise MemoryError("no room for this model until others are unloaded")
        return None
    def transform_fn(model, data, content_type, accept):
        return b"ok", "text/plain"
"""
CYCLES = 12


def test_a_load_retried_after_507_loads_every_time(server: Any, models_root: Path) -> None:
    # SageMaker's answer to a 507: unload other models, then LOAD the same model again at once.
    model_dir = make_model_dir(
        models_root, "tight", {"inference.py": OUT_OF_MEMORY_ONCE}, weights=False
    )
    for cycle in range(CYCLES):
        (model_dir / "out-of-memory-once").touch()
        assert load(server, "tight").status_code == 507, cycle
        retried = load(server, "tight")
        assert retried.status_code == 200, (cycle, retried.text)  # never 409
        assert invoke(server, "tight", b"{}").status_code == 200, cycle
        assert requests.delete(f"{server.url}/models/tight", timeout=TIMEOUT).status_code == 200


def test_unload_answers_once_the_models_processes_are_gone(server: Any, models_root: Path) -> None:
    make_model_dir(models_root, "cycled")
    for cycle in range(CYCLES):
        assert load(server, "cycled").status_code == 200, cycle
        assert processes_of(server, "cycled"), cycle
        assert invoke(server, "cycled", b"[[1, 2, 3]]").status_code == 200, cycle
        assert requests.delete(f"{server.url}/models/cycled", timeout=TIMEOUT).status_code == 200
        assert processes_of(server, "cycled") == [], cycle  # no grace: UNLOAD promised it


def test_form_and_multipart_bodies_reach_the_model_as_sent(server: Any, models_root: Path) -> None:
    # MMS alone decodes them into form parameters, and the model got no body at all.
    code = {
        "inference.py": """
            import json
            def model_fn(model_dir):
                return None
            def transform_fn(model, data, content_type, accept):
                return json.dumps({"type": content_type, "body": data.decode()}), "application/json"
        """
    }
    name = loaded(server, models_root, "forms", code, weights=False)
    multipart = "multipart/form-data; boundary=x"
    body = b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n'
    answer = invoke(server, name, body, multipart)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"type": multipart, "body": body.decode()}  # with its boundary
    answer = invoke(server, name, b"a=1&b=2", "application/x-www-form-urlencoded")
    assert answer.json() == {"type": "application/x-www-form-urlencoded", "body": "a=1&b=2"}
