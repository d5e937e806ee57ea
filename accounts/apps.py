from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from accounts.operators import operators_group_ensure

        # For every app's signal, not only this one's: the permissions it adds are other apps'.
        post_migrate.connect(operators_group_ensure, dispatch_uid="accounts-operators-group")
