"""The digest that decides whether commands need syncing."""

from __future__ import annotations

from bot.runtime.command_sync import digest


def test_the_digest_ignores_key_and_command_order() -> None:
    edit = {"name": "edit", "type": 1, "description": "Edit a picture"}
    menu = {"type": 3, "name": "Edit image"}
    assert digest([edit, menu]) == digest([dict(reversed(list(menu.items()))), edit])


def test_any_change_of_a_definition_changes_the_digest() -> None:
    edit = {"name": "edit", "type": 1, "description": "Edit a picture"}
    assert digest([edit]) != digest([{**edit, "description": "Edit a photo"}])
    assert digest([edit]) != digest([edit, {"name": "show", "type": 1}])
