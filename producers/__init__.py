"""What runs inside or beside the pools: publisher, flag client, shadow runner, simulator."""
