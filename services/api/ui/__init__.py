"""The dashboard's static files (static/), served by services/api/routes/ui.py."""
