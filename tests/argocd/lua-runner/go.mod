module loop-token-operator.local/argocd-lua

go 1.26

require (
	github.com/evanphx/json-patch v5.9.11+incompatible
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
