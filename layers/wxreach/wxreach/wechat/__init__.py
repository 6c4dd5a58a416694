"""The WeChat side: callback protocol (signatures, safe-mode crypto, XML, events) and identifiers."""
