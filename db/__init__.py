"""Persistence: SQLAlchemy 2.0 typed ORM, engine set-up, queries and Alembic migrations.

Nothing here imports Streamlit; the pages and the CLI share these functions.
"""
