"""The demo provider, so a fresh install answers with no model at all, and the
moderators group."""

from django.db import migrations


def create_defaults(apps, schema_editor):
    Provider = apps.get_model("chat", "Provider")
    Group = apps.get_model("auth", "Group")
    Provider.objects.get_or_create(
        name="demo", defaults={"kind": "demo", "priority": 1000, "context_window": 8192}
    )
    Group.objects.get_or_create(name="moderators")


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
