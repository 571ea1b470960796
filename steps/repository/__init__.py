"""The backup repository: format (config, keys, packs, index, trees, records) and the engines on top.

Layers, bottom up:

* :mod:`.crypto` - object and blob encryption (AES-256-GCM, per-object HKDF subkeys), storage names.
* :mod:`.keys` / :mod:`.config` - the master key wrapped by scrypt-derived keys; the format version.
* :mod:`.chunker` - keyed FastCDC content-defined chunking.
* :mod:`.pack` / :mod:`.index` - pack files of many blobs, index files and the compact in-memory index.
* :mod:`.tree` - directory listings with full metadata.
* :mod:`.repo` - :class:`~steps.repository.repo.Repository`: open/init, keys, index, blobs, records;
  with :mod:`.writer` (prune's protocol on the writer's side), :mod:`.restore_points` (committed
  backups, ``latest``, parents) and :mod:`.damage` (damaged records) mixed in or used by it.
* :mod:`.records` - what the records hold, and the commit point of a backup (``commit_backup``,
  ``save_run_record``).
* :mod:`.archiver` (copy), :mod:`.restorer` (restore), :mod:`.checker` (verify, check) over
  :mod:`.inspection`, :mod:`.repair_index` and :mod:`.repair_records` (repair), :mod:`.pruner` (prune,
  forget) over :mod:`.retention`, :mod:`.garbage`, :mod:`.lease` and :mod:`.object_lock` (Object Lock,
  versions, ``--as-of``).

Everything here talks to storage only through :class:`steps.drivers.objectstore.ObjectStore`.
The format is described in ``docs/design.md``.
"""
