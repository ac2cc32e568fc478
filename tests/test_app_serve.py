"""The app starts under ``streamlit run`` and answers its health check."""

from __future__ import annotations

import urllib.request

from tests.serve import streamlit_server


def test_streamlit_run_answers_health(demo_env, capsys):
    with streamlit_server(demo_env) as (base, seconds):
        with urllib.request.urlopen(base, timeout=10) as response:
            assert response.status == 200
        with capsys.disabled():
            print(f"\n[timing] streamlit run → /_stcore/health ok in {seconds:.1f} s")
