from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Colloquy"

    def ready(self) -> None:
        from chat import turn_counts

        pre_migrate.connect(turn_counts.before_migrations, sender=self)
        post_migrate.connect(turn_counts.after_migrations, sender=self)
