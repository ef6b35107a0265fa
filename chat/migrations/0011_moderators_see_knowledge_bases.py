"""The moderators group gets what the desk needs of knowledge bases (issue 16): to see
bases, documents and passages, and to delete bases and documents (the services allow a
moderator a room's base, and only admins a person's)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

MODERATOR_PERMISSIONS = [
    ("chat", "view_knowledgebase"),
    ("chat", "delete_knowledgebase"),
    ("chat", "view_knowledgedocument"),
    ("chat", "delete_knowledgedocument"),
    ("chat", "view_knowledgechunk"),
]


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations ran; create them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="moderators")
    for app_label, codename in MODERATOR_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name="moderators"):
        for app_label, codename in MODERATOR_PERMISSIONS:
            found = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is not None:
                group.permissions.remove(found)


class Migration(migrations.Migration):
    dependencies = [("chat", "0010_knowledge_bases")]
    operations = [migrations.RunPython(grant, revoke)]
