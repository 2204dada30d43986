"""What a service needs to de-identify for a project: the project's key (derived from the installation's
master secret, read once), the installation's pixel rules (PACS_DEID_PIXEL_RULES) and, when asked, the
project's crosswalk. The anonymizer (rules), the export jobs and their workers share it."""

from __future__ import annotations

import threading

from pacs.config import Settings
from pacs.deid.crosswalk import Crosswalk
from pacs.deid.engine import Deidentifier, DeidSettings
from pacs.deid.options import Profile
from pacs.deid.pixels import PixelRules, load_pixel_rules
from pacs.deid.secrets import SecretSource, project_key, secret_source
from pacs.storage.port import BlobStore


class ProjectKeys:
    """Each project's key from the master secret, read once (lazily) and kept; thread-safe."""

    def __init__(self, source: SecretSource) -> None:
        self.source = source
        self._master: bytes | None = None
        self._keys: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, project: str) -> bytes:
        with self._lock:
            if project not in self._keys:
                if self._master is None:
                    self._master = self.source.master()
                self._keys[project] = project_key(self._master, project)
            return self._keys[project]


def project_keys(settings: Settings) -> ProjectKeys:
    return ProjectKeys(secret_source(settings))


def pixel_rules(settings: Settings) -> PixelRules:
    """The installation's pixel rules (Clean Pixel Data): PACS_DEID_PIXEL_RULES, a TOML/JSON file or text;
    none: no region is blanked, so every image that burns in is held back under that option."""
    text = settings.deid_pixel_rules.strip()
    return load_pixel_rules(text) if text else PixelRules()


class Deidentifiers:
    """Makes the de-identifier of a (profile, project), with the crosswalk in `crosswalk_store` (under
    the source partition's `export/crosswalk/{project}/`) when asked for."""

    def __init__(self, keys: ProjectKeys, rules: PixelRules, crosswalk_store: BlobStore | None) -> None:
        self.keys, self.rules, self.crosswalk_store = keys, rules, crosswalk_store

    @classmethod
    def of(cls, settings: Settings, crosswalk_store: BlobStore) -> Deidentifiers:
        return cls(project_keys(settings), pixel_rules(settings), crosswalk_store)

    def make(self, profile: Profile, project: str, *, partition: str,
             crosswalk: bool = False) -> Deidentifier:
        key = self.keys(project)
        if crosswalk and self.crosswalk_store is None:
            raise ValueError("a crosswalk needs a store to keep it in")
        walk = Crosswalk(self.crosswalk_store, partition, project, key) \
            if crosswalk and self.crosswalk_store is not None else None
        return Deidentifier(DeidSettings(profile=profile, key=key, project=project, pixel_rules=self.rules),
                            crosswalk=walk)
