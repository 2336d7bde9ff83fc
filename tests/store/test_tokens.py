"""Commit tokens: a repeated commit is recognised by its token, so no two commits may share
one, across processes too (several sidecars, a forked worker)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from pushrules.runtime.store.base import new_token


def _tokens_of_child(conn) -> None:
    conn.send([new_token() for _ in range(1000)])
    conn.close()


def test_tokens_are_unique_within_a_process():
    tokens = [new_token() for _ in range(100_000)]
    assert len(set(tokens)) == len(tokens)
    assert all(token for token in tokens)  # "" is the token of a user never committed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_makes_other_tokens_than_its_parent():
    new_token()  # the parent's counter has moved: a child copying it would repeat what follows
    context = multiprocessing.get_context("fork")
    mine, theirs = context.Pipe()
    child = context.Process(target=_tokens_of_child, args=(theirs,))
    child.start()
    from_child = mine.recv()
    child.join(10)
    from_parent = [new_token() for _ in range(1000)]
    assert not set(from_child) & set(from_parent)
    assert from_child[0][:16] != from_parent[0][:16]  # its own run prefix
