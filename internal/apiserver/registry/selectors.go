package registry

import (
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
)

type (
	labelsSelector = labels.Selector
	fieldsSelector = fields.Selector
)
