from django.apps import AppConfig


class PeerAppConfig(AppConfig):
    name = "peerapp"
