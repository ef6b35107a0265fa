from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save, pre_delete, pre_migrate


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Colloquy"

    def ready(self) -> None:
        from chat import turn_counts

        pre_migrate.connect(turn_counts.before_migrations, sender=self)
        post_migrate.connect(turn_counts.after_migrations, sender=self)

        from chat.models import Upload
        from chat.uploads import stored_files

        # However an upload's row goes (its turn, session, channel or owner deleted by
        # cascade, or deleted itself), its file goes with it once that is committed.
        post_delete.connect(stored_files.delete_with_row, sender=Upload, dispatch_uid="upload-file")

        from chat.knowledge import indexing

        # However it goes, the knowledge-base documents still waiting on it end failed.
        pre_delete.connect(indexing.upload_deleted, sender=Upload, dispatch_uid="upload-waiting-documents")

        from django.contrib.auth import get_user_model

        from chat.credits import balances

        # Every new user gets CREDITS_INITIAL, however the account is made (sign-up,
        # admin, createsuperuser, a script): peers' users made through an API started at 0.
        post_save.connect(balances.user_created, sender=get_user_model(), dispatch_uid="initial-credits")
