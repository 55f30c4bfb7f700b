"""Placeholder: outbound endpoints API."""

from rest_framework.views import APIView


class EndpointListApi(APIView):
    pass


class EndpointDetailApi(APIView):
    pass


class EndpointDeliveriesApi(APIView):
    pass
