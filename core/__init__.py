"""Pure-Python core of the sarcopenia ultrasound app: imaging, labels, models, statistics.

Nothing in this package imports Streamlit, so every function here is testable without a
browser and reusable from the command line (``python -m core``).
"""
