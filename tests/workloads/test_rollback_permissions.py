"""Who may roll back what, and which secret values a rollback takes (review of #15).

The configuration is the workload's settings, env and secrets: rolling it back
is an edit, so it needs `change_workload` besides `rollback_workload`; a typed
secret value only stands in for one Berth no longer keeps; the diff, which
tells whether a secret now equals an earlier one, is for those who may roll back.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from tests.fixtures import images
from tests.workloads.test_api_rollback import changed_since, diff_url, post_rollback
from tests.workloads.test_rollback_configuration import NEW_SECRET
from workloads.models import EnvVar

pytestmark = pytest.mark.django_db


def user_with(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="correct horse 9")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


def assert_unchanged(workload) -> None:
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == NEW_SECRET
    assert workload.deploys.count() == 1


def test_rolling_back_the_configuration_needs_the_permission_to_edit(
    api_as, django_user_model, workload
):
    target = changed_since(workload)
    client = api_as(user_with(django_user_model, "rita", "view_workload", "rollback_workload"))

    refused = post_rollback(client, workload, deploy_id=target.pk)

    assert refused.status_code == 403
    assert "change workloads" in refused.json()["detail"]
    assert_unchanged(workload)
    code_only = post_rollback(client, workload, deploy_id=target.pk, configuration=False)
    assert code_only.status_code == 202, code_only.content


def test_a_typed_value_never_replaces_a_secret_berth_keeps(api_as, operator, workload):
    target = changed_since(workload)

    refused = post_rollback(api_as(operator), workload, deploy_id=target.pk,
                            secrets={"TOKEN": "attacker-chosen"})

    assert refused.status_code == 400
    assert "still keeps" in refused.json()["secrets"][0]
    assert_unchanged(workload)


def test_secret_values_go_with_the_configuration_only(api_as, operator, workload):
    target = changed_since(workload)

    refused = post_rollback(api_as(operator), workload, deploy_id=target.pk,
                            configuration=False, secrets={"TOKEN": "typed"})

    assert refused.status_code == 400 and "secrets" in refused.json()
    assert_unchanged(workload)


def test_the_diff_is_for_those_who_may_roll_back(api_as, django_user_model, operator,
                                                 workload):
    target = changed_since(workload)
    editor = user_with(django_user_model, "eddie", "view_workload", "change_workload")

    assert api_as(editor).get(diff_url(workload, target)).status_code == 403
    assert api_as(operator).get(diff_url(workload, target)).status_code == 200
