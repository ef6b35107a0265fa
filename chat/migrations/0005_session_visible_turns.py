"""Each session keeps the number of its visible turns (Session.visible_turns), so that the
channel list shows it without counting turns on every read (issue 13). The database
keeps it up to date: chat/turn_counts.py puts its triggers in place, and counts every
session's turns, after the migrations have run."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_moderators_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="session",
            name="visible_turns",
            field=models.IntegerField(default=0, editable=False, help_text="Turns not hidden."),
        ),
    ]
