"""DynamoDB NodeRegistry (AWS): node items in the catalog's table.

    PK = NODE#{AE title}   SK = NODE

Catalog partition names are lower-case (`storage.keys.PARTITION_PATTERN`), so an upper-case `NODE#`
prefix can never be a study's `{partition}#{StudyUID}`. Nodes are few (tens): their AE titles are also
kept on one index item (`PK = NODE#`, `SK = INDEX`, string set `aes`), written in the same transaction
as the node item, so listing is one GetItem and one BatchGetItem, never a read of the whole table.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, UnicodeAttribute, UnicodeSetAttribute
from pynamodb.exceptions import DoesNotExist
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from pacs.catalog.nodes import RemoteNode, check_node

NODE_SK, INDEX_PK, INDEX_SK = "NODE", "NODE#", "INDEX"


class _NodeItem(Model):
    pk = UnicodeAttribute(hash_key=True, attr_name="PK")
    sk = UnicodeAttribute(range_key=True, attr_name="SK")
    host = UnicodeAttribute(null=True)
    port = UnicodeAttribute(null=True)
    tls = BooleanAttribute(null=True)
    operations = UnicodeSetAttribute(null=True)
    description = UnicodeAttribute(null=True)
    #: Absent on items written before it existed: no preference.
    preferred_syntax = UnicodeAttribute(null=True)
    #: On the index item: every registered AE title.
    aes = UnicodeSetAttribute(null=True)


def _model(table: str, region_name: str, endpoint: str | None) -> type[_NodeItem]:
    class Item(_NodeItem):
        class Meta:
            table_name = table
            region = region_name
            host = endpoint

    return Item


def _node(ae_title: str, it: _NodeItem) -> RemoteNode:
    return RemoteNode(ae_title, it.host or "", int(it.port or 0), bool(it.tls),
                      frozenset(it.operations or ()), it.description or "", it.preferred_syntax or "")


class DynamoNodeRegistry:
    """Nodes as items of the catalog's table (see the module docstring)."""

    def __init__(self, table_name: str, *, region: str = "us-east-1", host: str | None = None) -> None:
        self._m = _model(table_name, region, host)

    def _key(self, ae_title: str) -> str:
        return f"NODE#{ae_title}"

    def put_node(self, node: RemoteNode) -> None:
        n = check_node(node)
        item = self._m(
            self._key(n.ae_title), NODE_SK, host=n.host, port=str(n.port), tls=n.tls,
            operations=set(n.operations) or None, description=n.description or None,
            preferred_syntax=n.preferred_syntax or None,
        )
        index = self._m(INDEX_PK, INDEX_SK)
        with TransactWrite(connection=self._m._get_connection().connection) as tx:
            tx.save(item)
            tx.update(index, actions=[self._m.aes.add({n.ae_title})])

    def get_node(self, ae_title: str) -> RemoteNode | None:
        try:
            it = self._m.get(self._key(ae_title), NODE_SK, consistent_read=True)
        except DoesNotExist:
            return None
        return _node(ae_title, it)

    def list_nodes(self) -> list[RemoteNode]:
        try:
            aes = sorted(self._m.get(INDEX_PK, INDEX_SK, consistent_read=True).aes or ())
        except DoesNotExist:
            return []
        items = {
            it.pk[len("NODE#"):]: it
            for it in self._m.batch_get([(self._key(a), NODE_SK) for a in aes], consistent_read=True)
        }
        return [_node(a, it) for a in aes if (it := items.get(a)) is not None]

    def remove_node(self, ae_title: str) -> bool:
        if self.get_node(ae_title) is None:
            return False
        with TransactWrite(connection=self._m._get_connection().connection) as tx:
            tx.delete(self._m(self._key(ae_title), NODE_SK))
            tx.update(self._m(INDEX_PK, INDEX_SK), actions=[self._m.aes.delete({ae_title})])
        return True

    def close(self) -> None:
        """Nothing to release: botocore clients are pooled by pynamodb."""
