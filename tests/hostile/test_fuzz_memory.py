"""Fuzzed requests through the real Site in memory: every route, every part of a request.

Whatever arrives, the answer is framed JSON with one exact Content-Length, failures are in the
envelope, nothing answers 500 (except ``launch_failed`` for a launch that passed validation,
as the contract says), and a rejected request changes neither the store nor a live session.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import FuzzBed
from tests.hostile.strategies import EXPLORE, raw_requests, requests

FAST = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SOAK = settings(FAST, max_examples=3000, derandomize=not EXPLORE)


def _structured(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    request = data.draw(requests(valid_launch=fuzz_bed.valid_launch), label="request")
    fuzz_bed.check(request.encode(), head=request.method == "HEAD")


def _raw(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    raw = data.draw(raw_requests(valid_launch=fuzz_bed.valid_launch), label="raw")
    fuzz_bed.check(raw, head=raw.startswith(b"HEAD "))


@FAST
@given(data=st.data())
def test_fuzzed_requests(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    _structured(fuzz_bed, data)


@FAST
@given(data=st.data())
def test_fuzzed_raw_bytes(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    _raw(fuzz_bed, data)


@pytest.mark.soak
@SOAK
@given(data=st.data())
def test_fuzzed_requests_soak(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    _structured(fuzz_bed, data)


@pytest.mark.soak
@SOAK
@given(data=st.data())
def test_fuzzed_raw_bytes_soak(fuzz_bed: FuzzBed, data: st.DataObject) -> None:
    _raw(fuzz_bed, data)
