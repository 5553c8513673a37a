"""Serializer fields that take input as the schema types it."""

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField turns 0 or true into "0" / "True",
    which the schema (type: string) says is invalid input (400 "Not a valid string.")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
