"""The API's permission check: each view names the Django permission an action needs."""

from rest_framework.permissions import BasePermission


class ActionPermission(BasePermission):
    """Reads `action_permissions` ({action: "app.codename"}) declared on a viewset.

    An action missing from the map is refused, so a new action cannot be
    reachable by accident before someone decides who may call it.
    """

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method.lower() not in view.http_method_names:
            return True  # The view answers 405; refusing here would say 403.
        action = getattr(view, "action", None)
        needed = view.action_permissions.get(action)
        if needed is None:
            return action is None  # OPTIONS / 405 handling on unknown methods
        return request.user.has_perm(needed)
