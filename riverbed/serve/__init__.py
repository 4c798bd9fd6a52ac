"""Serving the warehouse to principals: queries through the governance gateway, for the
command line now and the web app and API next."""
