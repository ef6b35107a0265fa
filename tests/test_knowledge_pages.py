"""The knowledge pages as the server renders them: who gets them, which rooms the create
form offers. What a base holds comes from the API (tests/test_knowledge_browser.py)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def client_for(user=None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_the_knowledge_pages_ask_anonymous_visitors_to_log_in(db):
    for path in ("/knowledge/", f"/knowledge/{uuid.uuid4()}/"):  # (a citation link aside: below)
        response = client_for().get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_create_form_offers_the_rooms_the_user_may_configure_and_no_others(
    channel, private_channel, alice, bob
):
    owner = client_for(alice).get("/knowledge/").content.decode()
    assert 'value="lobby"' in owner and 'value="backroom"' in owner
    # bob is a member of both rooms, owner of neither: a personal base only.
    member = client_for(bob).get("/knowledge/")
    assert member.status_code == 200
    page = member.content.decode()
    assert 'id="kb-channel"' not in page and 'value="lobby"' not in page
    assert member["Cache-Control"] == "no-store"


def test_the_site_navigation_links_to_the_knowledge_page(alice):
    assert 'href="/knowledge/"' in client_for(alice).get("/").content.decode()
    assert 'href="/knowledge/"' not in client_for().get("/").content.decode()


def test_a_base_page_is_a_frame_for_any_id_and_not_a_page_for_a_malformed_one(alice):
    frame = client_for(alice).get(f"/knowledge/{uuid.uuid4()}/")
    assert frame.status_code == 200 and b'data-page="base"' in frame.content
    assert client_for(alice).get("/knowledge/not-a-uuid/").status_code == 404


def test_a_citations_link_opens_without_an_account_for_the_api_to_judge(db):
    """A watch page's visitors follow citation links (?chunk=N&turn=T&key=…): the frame
    opens, and GET …/chunks/{chunk} decides what it shows."""
    base = uuid.uuid4()
    response = client_for().get(f"/knowledge/{base}/?chunk=12&turn=3")
    assert response.status_code == 200 and b'data-page="base"' in response.content
    bare = client_for().get(f"/knowledge/{base}/")
    assert bare.status_code == 302 and bare["Location"].startswith("/accounts/login/")
