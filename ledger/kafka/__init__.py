"""The one place for Kafka outside faust.

- ``clients``: every kafka-python and aiokafka client is built here, from ``Settings``, with the
  library's errors mapped to ``ledger.errors.BrokerError`` / ``PublishError`` at this boundary.
- ``log``: one reader of whole topics outside any consumer group, from the beginning to the end
  seen when asked or tailing on, synchronous (kafka-python) and asynchronous (aiokafka).
- ``topics``: the topic table (names, keys, partitions, retention) - the only list of topics.
- ``admin``: ``topics ensure`` and the describe-configs comparison ``check`` shares with it.
- ``broker``: the local KRaft broker ``migration-ledger kafka up`` runs from Maven's jars.

Which library where: kafka-python is the design card's client for synchronous code (command
lines, the publisher's sender thread, the routers' flag client); aiokafka comes with faust and
serves code that runs on the worker's or the sink's event loop. Importing this package loads
neither library: each is imported where a client is built.
"""
