"""The moderators group gets what the moderation desk needs: to see channels,
sessions, turns, memberships, users and the audit log; to hide, delete and purge
turns; to lock channels, mute and ban. Not to delete channels, nor to change users."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

MODERATOR_PERMISSIONS = [
    ("chat", "view_channel"),
    ("chat", "moderate_channel"),
    ("chat", "view_session"),
    ("chat", "view_turn"),
    ("chat", "change_turn"),
    ("chat", "delete_turn"),
    ("chat", "view_membership"),
    ("chat", "add_membership"),
    ("chat", "change_membership"),
    ("chat", "delete_membership"),
    ("chat", "view_moderationaction"),
    ("chat", "ban_user"),
    ("auth", "view_user"),
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
    for group in Group.objects.filter(name="moderators"):
        group.permissions.clear()


class Migration(migrations.Migration):
    dependencies = [("chat", "0003_moderation_permissions"), ("auth", "0012_alter_user_first_name_max_length")]
    operations = [migrations.RunPython(grant, revoke)]
