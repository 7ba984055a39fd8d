"""
A thin, test-only extension of ``kmock.KubernetesEmulator`` (kmock 0.8).

The stock emulator is "an in-memory JSON store over HTTP": it deep-merges every
PATCH, whatever its Content-Type, and sets no server-side metadata at all.
This subclass adds only the apiserver behaviour that a Kopf operator (and our
assertions) depend on. Every feature can be switched off to compare with the
stock emulator.

  * metadata the apiserver would set: namespace (from the URL), uid,
    creationTimestamp, resourceVersion (a global counter, bumped on every
    write and visible in watch events), generation (bumped on spec changes);
  * metadata.generateName -> a generated metadata.name (Kopf posts every
    k8s Event with generateName; the stock emulator stores them all under the
    name None, so every Event after the first fails with 409);
  * a PATCH with ``application/apply-patch+yaml`` to an absent object CREATES it
    (server-side apply is an upsert); on an existing object it is deep-merged like
    a merge-patch (NO field-ownership semantics, NO pruning of fields the manager
    stopped sending);
  * the /status subresource: a PATCH to .../status changes only .status; a PATCH
    to the main endpoint drops .status (for resources declared with
    subresources={'status'});
  * a JSON-patch 'test' op that fails -> HTTP 422 (the stock emulator gives 500;
    Kopf expects 422 to retry its finalizer patches);
  * a metadata.resourceVersion in a merge patch is treated as a precondition -> 409;
  * PUT (replace), which the stock emulator answers with 404 "Endpoint Not Found";
  * ?labelSelector= on LIST and WATCH (equality/existence: a=b, a==b, a!=b, a, !a);
  * garbage collection: deleting an owner deletes the objects whose
    ownerReferences point to its uid (background propagation, one level per event).
"""
import copy
import datetime
import itertools
import random
import string
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import enums, k8s, rendering  # the public API has no hooks for this
from kmock._internal.dicts import patch_dict


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def _parse_selector(selector: str) -> list[tuple[str, str, str | None]]:
    terms: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in selector.split(','))):
        if '!=' in term:
            k, v = term.split('!=', 1); terms.append(('!=', k.strip(), v.strip()))
        elif '==' in term:
            k, v = term.split('==', 1); terms.append(('=', k.strip(), v.strip()))
        elif '=' in term:
            k, v = term.split('=', 1); terms.append(('=', k.strip(), v.strip()))
        elif term.startswith('!'):
            terms.append(('!', term[1:].strip(), None))
        else:
            terms.append(('?', term, None))
    return terms


def _matches(obj: dict[str, Any], terms: list[tuple[str, str, str | None]]) -> bool:
    labels = (obj.get('metadata') or {}).get('labels') or {}
    for op, key, val in terms:
        if op == '=' and labels.get(key) != val: return False
        if op == '!=' and labels.get(key) == val: return False
        if op == '?' and key not in labels: return False
        if op == '!' and key in labels: return False
    return True


class SpecServeEmulator(kmock.KubernetesEmulator):
    # attrs-defined base class: plain class attributes are fine as feature toggles.
    ssa_upsert = True
    server_metadata = True
    status_subresource = True
    label_selectors = True
    garbage_collection = True
    _rv_counter = itertools.count(1000)

    def _next_rv(self) -> str:
        return str(next(self._rv_counter))

    def _find(self, request: rendering.Request):
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return key, self.objects[key]
        return key, None

    def _has_status_subresource(self, resource) -> bool:
        return resource in self.resources and 'status' in self.resources[resource].subresources

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)

        ctype = (request.headers.get('Content-Type') or '').split(';')[0].strip()

        # PUT = replace: not supported by kmock at all (404), so serve it here entirely.
        if request.method == enums.method.PUT and request.name and isinstance(request.data, dict):
            return await self._serve_put(request)

        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            self._fill_create_metadata(request, request.data)

        elif request.action == enums.action.UPDATE and request.name:
            _, existing = self._find(request)

            # A real YAML apply body (not JSON): the stock emulator silently ignores it (data=None).
            if ctype == 'application/apply-patch+yaml' and request.data is None and request.text.strip():
                object.__setattr__(request, 'data', yaml.safe_load(request.text))

            # Server-side apply is an upsert: turn a PATCH to an absent object into a CREATE.
            if existing is None and ctype == 'application/apply-patch+yaml' and self.ssa_upsert:
                if not isinstance(request.data, dict):
                    raise k8s.KubernetesError(status=415, reason='UnsupportedMediaType',
                                              message='Only JSON-encoded apply bodies are supported by the emulator.')
                request.data.setdefault('metadata', {}).setdefault('name', request.name)
                self._fill_create_metadata(request, request.data)
                object.__setattr__(request, 'action', enums.action.CREATE)
                object.__setattr__(request, 'name', None)  # a CREATE has no name in the URL

            elif existing is not None and isinstance(request.data, dict):
                self._prepare_merge_patch(request, existing)

            elif existing is not None and isinstance(request.data, list):  # JSON-patch
                self._prepare_json_patch(request, existing)


        # Deletions (incl. finalizer removal by a PATCH) may release dependents: collect garbage.
        key, existing = self._find(request) if request.name else (None, None)
        uid = existing.get('metadata', {}).get('uid') if existing is not None else None
        response = await super()._handle(request)
        if uid and self.garbage_collection and request.action in (enums.action.DELETE, enums.action.UPDATE):
            if key not in self.objects or self.objects[key].deleted:
                await self._collect_garbage(uid)
        return response

    # -- server-side metadata -------------------------------------------------------------------

    def _fill_create_metadata(self, request: rendering.Request, data: dict[str, Any]) -> None:
        meta = data.setdefault('metadata', {})
        if request.namespace and not meta.get('namespace'):
            meta['namespace'] = request.namespace  # otherwise namespaced watches never see it!
        if not meta.get('name') and meta.get('generateName'):
            suffix = ''.join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta['name'] = meta['generateName'] + suffix
        if self.server_metadata:
            meta['uid'] = str(uuid.uuid4())
            meta['creationTimestamp'] = _now()
            meta['resourceVersion'] = self._next_rv()
            meta['generation'] = 1
        if self.status_subresource and self._has_status_subresource(request.resource):
            data.pop('status', None)

    def _prepare_merge_patch(self, request: rendering.Request, existing) -> None:
        data = request.data
        current_meta = existing.get('metadata', {})
        if self.status_subresource and self._has_status_subresource(request.resource):
            if request.subresource == 'status':
                for key in list(data):
                    if key not in ('status', 'metadata'):
                        del data[key]
                if 'metadata' in data:  # only the precondition is honoured here
                    data['metadata'] = {k: v for k, v in data['metadata'].items() if k == 'resourceVersion'}
            elif request.subresource is None:
                data.pop('status', None)
        if not self.server_metadata:
            return
        meta = data.get('metadata') if isinstance(data.get('metadata'), dict) else None
        if meta and meta.get('resourceVersion') and meta['resourceVersion'] != current_meta.get('resourceVersion'):
            raise k8s.KubernetesError(status=409, reason='Conflict', message=(
                'Operation cannot be fulfilled: the object has been modified;'
                ' please apply your changes to the latest version and try again'))
        new_meta = data.setdefault('metadata', {})
        new_meta['resourceVersion'] = self._next_rv()
        if request.subresource is None and 'spec' in data:
            old_spec = existing.raw.get('spec')
            new_spec = patch_dict({'spec': copy.deepcopy(old_spec)}, {'spec': data['spec']}).get('spec')
            if new_spec != old_spec:
                new_meta['generation'] = int(current_meta.get('generation') or 1) + 1
        for ro in ('uid', 'creationTimestamp', 'name', 'namespace'):
            new_meta.pop(ro, None)

    def _prepare_json_patch(self, request: rendering.Request, existing) -> None:
        ops = request.data
        try:  # Validate the 'test' ops here: a failure must be 422 (the stock emulator gives 500).
            jsonpatch.apply_patch(copy.deepcopy(existing.raw), ops, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
            raise k8s.KubernetesError(status=422, reason='Invalid', message=f'the server rejected our request: {e}')
        if self.server_metadata:
            ops.append({'op': 'add', 'path': '/metadata/resourceVersion', 'value': self._next_rv()})

    # -- PUT (replace) ----------------------------------------------------------------------------

    async def _serve_put(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        key, existing = self._find(request)
        if existing is None:
            return await self._render_error(k8s.KubernetesObjectNotFoundError())
        body = request.data
        meta = body.setdefault('metadata', {})
        old_meta = existing.get('metadata', {})
        if meta.get('resourceVersion') and meta['resourceVersion'] != old_meta.get('resourceVersion'):
            return await self._render_error(k8s.KubernetesError(status=409, reason='Conflict', message='the object has been modified'))
        for ro in ('uid', 'creationTimestamp', 'namespace', 'name'):
            if ro in old_meta:
                meta[ro] = old_meta[ro]
        if self.server_metadata:
            meta['resourceVersion'] = self._next_rv()
            gen = int(old_meta.get('generation') or 1)
            meta['generation'] = gen + 1 if body.get('spec') != dict(existing).get('spec') else gen
        if self.status_subresource and self._has_status_subresource(request.resource):
            if 'status' in existing:
                body['status'] = existing.raw['status']
            else:
                body.pop('status', None)
        async with self._lock:
            existing.create(body)  # appends a new version to the history (no merging)
            raw = existing.raw
            await self._buses[request.resource].put({'type': 'MODIFIED', 'object': raw})
        return aiohttp.web.json_response(raw)

    # -- LIST / WATCH with label selectors ---------------------------------------------------------

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        result = await super()._serve_list(request)
        selector = request.params.get('labelSelector')
        if selector and self.label_selectors:
            terms = _parse_selector(selector)
            result['items'] = [obj for obj in result['items'] if _matches(obj, terms)]
        if self.server_metadata:
            result['metadata']['resourceVersion'] = self._next_rv()
        return result

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        selector = request.params.get('labelSelector') if self.label_selectors else None
        terms = _parse_selector(selector) if selector else None
        async for event in super()._serve_watch(request):
            if terms is None or not isinstance(event, dict) or _matches(event.get('object', {}), terms):
                yield event

    # -- garbage collection -------------------------------------------------------------------------

    async def _collect_garbage(self, owner_uid: str) -> None:
        victims = []
        for (resource, namespace, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = obj.get('metadata', {}).get('ownerReferences') or []
            if any(ref.get('uid') == owner_uid for ref in refs):
                victims.append((resource, namespace, name, obj))
        for resource, namespace, name, obj in victims:
            async with self._lock:
                raw = obj.raw
                obj.delete()
                await self._buses[resource].put({'type': 'DELETED', 'object': raw})
            uid = raw.get('metadata', {}).get('uid')
            if uid:
                await self._collect_garbage(uid)
