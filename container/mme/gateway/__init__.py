"""The gateway: what owns `mme serve`'s port and stands between SageMaker and MMS.

MMS listens on a private loopback port; the gateway answers SageMaker's calls on the
public one. It passes invocations through, and makes LOAD and UNLOAD keep the promises
that MMS 1.1.11 alone does not (see :mod:`mme.gateway.management`).
"""
