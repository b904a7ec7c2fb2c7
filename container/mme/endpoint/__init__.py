"""`mme endpoint`: SageMaker's platform half of a multi-model endpoint, run locally.

It answers the runtime API that boto3's ``sagemaker-runtime`` client calls, fetches
each TargetModel from a ModelDataUrl prefix (S3 or a local folder), extracts it
safely, loads it through the container's multi-model API and forwards invocations.
"""
