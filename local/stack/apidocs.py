"""Interactive docs of the operator API on the local front: `GET /docs` (Swagger UI) and
`GET /openapi.json` (docs/openapi.json, pointed at this front, with the local API key as its
security scheme). The UI's assets are the ones Powertools ships, so nothing is fetched at run time."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

OPENAPI_DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
SWAGGER_ASSETS = "aws_lambda_powertools.event_handler.openapi.swagger_ui"
SECURITY_SCHEME = "localApiKey"

_ASSET_TYPES = {
    "swagger-ui-bundle.min.js": "text/javascript; charset=utf-8",
    "swagger-ui.min.css": "text/css; charset=utf-8",
}

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wxreach operator API (local stack)</title>
<link rel="stylesheet" href="/docs/swagger-ui.min.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.min.js"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  docExpansion: "list",
  persistAuthorization: true,
  tryItOutEnabled: false
});
</script>
</body>
</html>
"""


@dataclass(frozen=True)
class DocsResponse:
    status: int
    content_type: str
    body: bytes
    cache: bool = False


@dataclass
class ApiDocs:
    """Answers the docs paths; `None` for every other path."""

    document: Path = OPENAPI_DOCUMENT
    api_key_header: str = "x-api-key"
    _assets: dict[str, bytes] = field(default_factory=dict, repr=False)

    PATHS = frozenset({"/docs", "/docs/", "/openapi.json", *(f"/docs/{name}" for name in _ASSET_TYPES)})

    def serve(self, method: str, path: str, host: str) -> DocsResponse | None:
        if method not in ("GET", "HEAD") or path not in self.PATHS:
            return None
        if path in ("/docs", "/docs/"):
            return DocsResponse(200, "text/html; charset=utf-8", _PAGE.encode())
        if path == "/openapi.json":
            return self._openapi(host)
        return self._asset(path.removeprefix("/docs/"))

    def _openapi(self, host: str) -> DocsResponse:
        try:
            schema: dict[str, Any] = json.loads(self.document.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _missing(f"{self.document} does not exist: run make openapi")
        # "Try it out" goes to the front that served the page, with the local API key.
        schema["servers"] = [{"url": f"http://{host}", "description": "this local stack"}]
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[SECURITY_SCHEME] = {
            "type": "apiKey",
            "in": "header",
            "name": self.api_key_header,
            "description": "The local stack's API key (make local prints it); SigV4 when deployed",
        }
        schema["security"] = [{SECURITY_SCHEME: []}]
        body = json.dumps(schema, ensure_ascii=False).encode()
        return DocsResponse(200, "application/json", body)

    def _asset(self, name: str) -> DocsResponse:
        if name not in self._assets:
            try:
                self._assets[name] = resources.files(SWAGGER_ASSETS).joinpath(name).read_bytes()
            except (ModuleNotFoundError, FileNotFoundError):
                return _missing(f"Swagger UI asset {name} not found in {SWAGGER_ASSETS}")
        return DocsResponse(200, _ASSET_TYPES[name], self._assets[name], cache=True)


def _missing(message: str) -> DocsResponse:
    return DocsResponse(404, "application/json", json.dumps({"message": message}).encode())
