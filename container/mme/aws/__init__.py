"""Deploying to SageMaker: upload models, create the endpoint, scale, invoke and tear down.

Each module does one job with boto3 clients it is given; `command` turns them into `mme`
subcommands, and `errors` is the one place where failures become messages and exit codes.
"""
