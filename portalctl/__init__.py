"""portalctl: the portal's command-line client (README "Command line"). It talks to the
portal only through its REST API and websockets; it imports nothing of the server."""
