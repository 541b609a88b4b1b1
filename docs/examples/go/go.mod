module example.com/usage-ledger-producer

go 1.22
