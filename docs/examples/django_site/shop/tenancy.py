def owner_for_user(user):
    """The customer whose jobs ``user`` sees; None (superusers): every customer's."""
    if user.is_superuser:
        return None
    return user.username.partition("@")[2] or None
