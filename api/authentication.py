from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.models import ApiKey
from accounts.selectors import api_key_for_raw
from accounts.services import api_key_touch


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer md_test_…`. Missing, malformed, unknown or revoked: 401."""

    def authenticate(self, request: Request) -> tuple[ApiKey, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None  # the permission check answers 401 with "no key"
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != "bearer" or not raw_key.strip():
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header. Send `Authorization: Bearer <key>`."
            )
        api_key = api_key_for_raw(raw_key.strip())
        if api_key is None:
            # One message for unknown and revoked keys: no oracle for which keys exist.
            raise exceptions.AuthenticationFailed("Invalid API key provided.")
        api_key_touch(api_key=api_key)
        return api_key, api_key

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="kinetic"'
