"""The reach domain: accounts, followers and consent, callbacks' effects, journeys. No AWS here:
it talks to the world through the ports in reach.ports."""
