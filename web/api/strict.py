"""JSON bodies of the types the schema says: no `"slug": 0`, no `"replicas": "2"`.

DRF's fields coerce: a CharField takes a number, an IntegerField the text
"2", a BooleanField "yes" or 1, a related field "5". The schema promises a
string, an integer, a boolean, and a client that relies on it must get a 400
for anything else, not a value it did not send. `StrictTypes` checks each
field's JSON type before DRF's own validation; query strings (all text) are
read by serializers without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


def _wrong_type(field: serializers.Field, value) -> str | None:
    """The field's own error message when `value` is not of its JSON type, else None."""
    if value is None:
        return None  # allow_null is DRF's to check
    messages = field.error_messages
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else messages["invalid"]
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else messages["invalid"]
    if isinstance(field, serializers.PrimaryKeyRelatedField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else messages["incorrect_type"].format(
            data_type=type(value).__name__)
    if isinstance(field, serializers.ManyRelatedField):
        if not isinstance(value, list):
            return messages["not_a_list"].format(input_type=type(value).__name__)
        return next(filter(None, (_wrong_type(field.child_relation, item) for item in value)),
                    None)
    if isinstance(field, serializers.ChoiceField) and not isinstance(
            field, serializers.MultipleChoiceField):
        if all(isinstance(key, str) for key in field.choices):
            return None if isinstance(value, str) else messages["invalid_choice"].format(
                input=value)
        return None
    if isinstance(field, serializers.CharField):
        return None if isinstance(value, str) else messages["invalid"]
    if isinstance(field, serializers.TimeField | serializers.DateTimeField |
                  serializers.DateField):
        # Their own "invalid" message wants the formats; a time is written as a string.
        ok = isinstance(value, str)
        return None if ok else serializers.CharField.default_error_messages["invalid"]
    return None


class StrictTypes:
    """A serializer mixin: refuse values of the wrong JSON type (the module docstring)."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            errors = {}
            for name, field in self.fields.items():
                if field.read_only or name not in data:
                    continue
                problem = _wrong_type(field, data[name])
                if problem:
                    errors[name] = [problem]
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
