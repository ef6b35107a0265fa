"""The built-in demo reads images (it says what it received: it exists to show every
feature offline); its row says so, so the admin's vision column and filter tell the truth."""

from typing import Any

from django.db import migrations


def demo_reads_images(apps: Any, schema_editor: Any) -> None:
    apps.get_model("chat", "Provider").objects.filter(kind="demo").update(vision=True)


class Migration(migrations.Migration):
    dependencies = [("chat", "0007_uploads")]
    operations = [migrations.RunPython(demo_reads_images, migrations.RunPython.noop)]
