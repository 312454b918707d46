"""Bridges to other systems (Ray Data); each module is imported only when used."""
