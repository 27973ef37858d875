"""CRMs: HubSpot's CRM v3 API, Pipedrive's API (v2 persons, v1 notes) and a Salesforce org (OAuth2 + REST)."""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from gateway.clock import Clock
from tests.fakes import FakeOAuthApi, Received, Reply, json_reply
from tests.services.base import NowMs, ServiceFake, json_response, parse_json

HUBSPOT_NOTE_TO_CONTACT = 202  # HubSpot's association type id: note to contact (HUBSPOT_DEFINED)


def _hubspot_error(status: int, message: str, category: str, **more: Any) -> web.Response:
    return json_response(status, {"status": "error", "message": message, "category": category, **more})


class HubSpotApi(ServiceFake):
    """HubSpot CRM v3: contacts upserted in batches by email, notes with associations.

    A bearer token (a Service Key or an app's token); 100 requests per 10 s, answered with HubSpot's
    `ten_secondly_rolling` 429. A property HubSpot does not know is a 400; one sent as `""` is **cleared**
    (recorded in `cleared`). A note needs `hs_timestamp`, and shows on a contact only through an association
    (type 202) to a contact that exists.
    """

    CONTACT_PROPERTIES = frozenset({"email", "firstname", "lastname", "phone", "company", "website", "jobtitle"})

    def __init__(self, token: str = "hubspot-service-key-0123456789", now_ms: NowMs | None = None) -> None:
        super().__init__([(100, 10.0)], now_ms)
        self.token = token
        self.contacts: dict[str, dict[str, Any]] = {}  # by email: {"id", "properties"}
        self.notes: list[dict[str, Any]] = []
        self.cleared: list[tuple[str, str]] = []  # (contact id, property) emptied by a ""

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _hubspot_error(401, "Authentication credentials not found.", "INVALID_AUTHENTICATION")
        if request.method != "POST" or request.path not in (
            "/crm/v3/objects/contacts/batch/upsert", "/crm/v3/objects/notes"
        ):
            return _hubspot_error(404, f"No route for {request.method} {request.path}", "OBJECT_NOT_FOUND")
        document = parse_json(body)
        problem = self._contacts_problem(document) if "contacts" in request.path else self._note_problem(document)
        return _hubspot_error(400, problem, "VALIDATION_ERROR") if problem else None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        return json_response(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                                   "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"})  # fmt: skip

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        document = parse_json(body)
        if "contacts" in request.path:
            return json_response(200, {"status": "COMPLETE", "results": [self._upsert(item)
                                                                         for item in document["inputs"]]})
        note = {"id": str(9000 + len(self.notes)), "properties": document["properties"],
                "contacts": [association["to"]["id"] for association in document.get("associations", [])]}
        self.notes.append(note)
        return json_response(201, {"id": note["id"], "properties": note["properties"], "archived": False})

    def contact(self, email: str) -> dict[str, Any]:
        return self.contacts[email.lower()]

    def _contacts_problem(self, document: Any) -> str | None:
        inputs = document.get("inputs") if isinstance(document, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return "Invalid input JSON: inputs is required"
        for item in inputs:
            if item.get("idProperty") != "email" or not item.get("id"):
                return "idProperty email and an id are required to upsert by email"
            unknown = sorted(set(item.get("properties", {})) - self.CONTACT_PROPERTIES)
            if unknown:
                return f'Property values were not valid: Property "{unknown[0]}" does not exist'
        return None

    def _note_problem(self, document: Any) -> str | None:
        properties = document.get("properties") if isinstance(document, dict) else None
        if not isinstance(properties, dict) or not properties.get("hs_timestamp"):
            return "Property values were not valid: hs_timestamp is required"
        known = {contact["id"] for contact in self.contacts.values()}
        for association in document.get("associations", []):
            types = association.get("types", [])
            if association.get("to", {}).get("id") not in known:
                return f"One or more associations are invalid: contact {association.get('to')} does not exist"
            if types != [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": HUBSPOT_NOTE_TO_CONTACT}]:
                return f"One or more associations are invalid: types {types}"
        return None

    def _upsert(self, item: dict[str, Any]) -> dict[str, Any]:
        email = str(item["id"]).lower()
        new = email not in self.contacts
        contact = self.contacts.setdefault(email, {"id": str(51 + len(self.contacts)), "properties": {}})
        for name, value in item.get("properties", {}).items():
            if value == "":
                self.cleared.append((contact["id"], name))
                contact["properties"].pop(name, None)
            else:
                contact["properties"][name] = value
        return {"id": contact["id"], "properties": dict(contact["properties"]), "new": new}


class PipedriveApi(ServiceFake):
    """Pipedrive: `POST /api/v2/persons` (`emails`, not v1's `email`) and `POST /api/v1/notes`, the API token in
    the `x-api-token` header. Bursts over 80 requests per 2 s get Pipedrive's 429; `POST /v1/persons` is gone."""

    def __init__(self, token: str = "pipedrive-api-token-0123456789", now_ms: NowMs | None = None) -> None:
        super().__init__([(80, 2.0)], now_ms)
        self.token = token
        self.persons: dict[int, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.headers.get("x-api-token") != self.token:
            return json_response(401, {"success": False, "error": "unauthorized access", "errorCode": 401})
        if request.method != "POST" or request.path not in ("/api/v2/persons", "/api/v1/notes"):
            return json_response(404, {"success": False, "error": f"Unknown method {request.path}",
                                       "errorCode": 404})  # fmt: skip
        document = parse_json(body)
        problem = self._person_problem(document) if "persons" in request.path else self._note_problem(document)
        return json_response(400, {"success": False, "error": problem, "code": "ERR_SCHEMA_VALIDATION_FAILED"}) \
            if problem else None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        headers = {"x-ratelimit-limit": "80", "x-ratelimit-remaining": "0", "x-ratelimit-reset": str(math.ceil(wait_s))}
        return json_response(429, {"success": False, "error": "Request over limit", "errorCode": 429}, headers)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        document = parse_json(body)
        if "persons" in request.path:
            person = {"id": 101 + len(self.persons), "name": document["name"], "emails": document.get("emails", [])}
            self.persons[person["id"]] = person
            return json_response(200, {"success": True, "data": person})
        note = {"id": 7 + len(self.notes), **document}
        self.notes.append(note)
        return json_response(201, {"success": True, "data": note})

    def _person_problem(self, document: Any) -> str | None:
        if not isinstance(document, dict) or not isinstance(document.get("name"), str) or not document["name"]:
            return "Validation failed: name: Parameter is required"
        if "email" in document:
            return "Validation failed: email: Parameter is not allowed (use emails)"
        emails = document.get("emails", [])
        if not isinstance(emails, list) or not all(isinstance(item, dict) and item.get("value") for item in emails):
            return "Validation failed: emails: must be a list of {value, primary, label}"
        return None

    def _note_problem(self, document: Any) -> str | None:
        if not isinstance(document, dict) or not document.get("content"):
            return "Validation failed: content: Parameter is required"
        person = document.get("person_id")
        if person is None:
            return "Validation failed: one of deal_id, person_id, org_id, lead_id, project_id is required"
        if person not in self.persons:
            return f"Person {person} not found"
        return None


SALESFORCE_EXPIRED = json_reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])


class SalesforceOrg(FakeOAuthApi):
    """A Salesforce org: the client-credentials flow at `/services/oauth2/token` (no `expires_in`: a session lasts
    until the org ends it, then `401 INVALID_SESSION_ID`), and `PATCH .../sobjects/Contact/<external id field>/<value>`
    upserting a contact: 201 created or 200 updated, `[{message, errorCode}]` on errors. After `daily_limit`
    API requests the org answers `403 REQUEST_LIMIT_EXCEEDED`."""

    FIELDS = frozenset({"FirstName", "LastName", "Email", "Description", "LeadSource", "Missive_Last_Subject__c",
                        "Missive_Conversation_URL__c"})  # fmt: skip
    UPSERT_PREFIX = "/services/data/v62.0/sobjects/Contact/Missive_Email__c/"

    def __init__(self, clock: Clock, daily_limit: int = 100_000) -> None:
        self.client_id, self.client_secret = "3MVG9-connected-app-key", "connected-app-secret-0123"
        super().__init__(clock, client_id=self.client_id, client_secret=self.client_secret, lifetime_s=None,
                         unauthorized=SALESFORCE_EXPIRED, token_path="/services/oauth2/token")
        self.daily_limit = daily_limit
        self.contacts: dict[str, dict[str, Any]] = {}  # by Missive_Email__c

    def token_extras(self) -> dict[str, Any]:
        return {"instance_url": self.url("").rstrip("/"), "id": "https://login.salesforce.com/id/00D/005",
                "issued_at": str(self._clock.now_ms()), "signature": "c2lnbmF0dXJl"}  # fmt: skip

    def answer(self, request: web.Request, received: Received) -> Reply:
        if len(self.authorized) > self.daily_limit:
            exceeded = {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
            return json_reply(403, [exceeded])
        if request.method != "PATCH" or not request.path.startswith(self.UPSERT_PREFIX):
            return json_reply(404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}])
        key = request.path.removeprefix(self.UPSERT_PREFIX)
        fields = parse_json(received.body)
        if not isinstance(fields, dict):
            return json_reply(400, [{"message": "The request body is not JSON", "errorCode": "JSON_PARSER_ERROR"}])
        unknown = sorted(set(fields) - self.FIELDS)
        if unknown:
            return json_reply(400, [{"message": f"No such column '{unknown[0]}' on sobject of type Contact",
                                     "errorCode": "INVALID_FIELD"}])  # fmt: skip
        created = key not in self.contacts
        if created and not fields.get("LastName"):
            return json_reply(400, [{"message": "Required fields are missing: [LastName]",
                                     "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["LastName"]}])  # fmt: skip
        contact = self.contacts.setdefault(key, {"Id": f"003{len(self.contacts):015d}"})
        contact.update(fields)
        return json_reply(201 if created else 200, {"id": contact["Id"], "success": True, "errors": [],
                                                    "created": created})
