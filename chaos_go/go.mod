module chaosrun/chaos_go

go 1.22
