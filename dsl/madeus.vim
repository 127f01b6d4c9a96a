" Vim syntax file
" Language:    Madeus (.mad deployment descriptions)
" Maintainer:  the Madeus authors
" Install:     copy to ~/.vim/syntax/madeus.vim and add
"              autocmd BufRead,BufNewFile *.mad setfiletype madeus
"              to your vimrc (or put that line in ~/.vim/ftdetect/madeus.vim).

if exists("b:current_syntax")
  finish
endif

syn keyword madeusDeclaration component assembly nextgroup=madeusTypeName skipwhite
syn keyword madeusInclude     import
syn keyword madeusMember      places provide use
syn keyword madeusTransition  transition nextgroup=madeusTransitionName skipwhite
syn keyword madeusControl     for in of on connect at
syn keyword madeusAction      shell ansible playbook role tasks python upload to
syn keyword madeusAttribute   timeout retries behaviour idempotent optional output change
syn keyword madeusKind        service data
syn keyword madeusConstant    true false sites hosts
syn keyword madeusType        str int float bool secret
syn keyword madeusBuiltin     env

syn match madeusTypeName       "\h\w*" contained
syn match madeusTransitionName "\h\w*" contained

syn match madeusComment  "#.*$" contains=@Spell
syn match madeusDuration "\~\=\<\(\d\+\(\.\d\+\)\=\(ms\|h\|m\|s\)\)\+\>"
syn match madeusNumber   "\<[+-]\=\d\+\(\.\d\+\)\=\([eE][+-]\=\d\+\)\=\>"
syn match madeusOperator "->\|\*\|=\|\~"

syn match  madeusEscape      "\\[\"\\nt]" contained
syn match  madeusBraces      "{{\|}}" contained
syn match  madeusPlaceholder "{\h\w*\(\.\h\w*\)*}" contained
syn region madeusString start=+"+ skip=+\\.+ end=+"+ end=+$+ oneline
      \ contains=madeusEscape,madeusBraces,madeusPlaceholder
syn region madeusTripleString start=+"""+ skip=+\\.+ end=+"""+
      \ contains=madeusEscape,madeusBraces,madeusPlaceholder

hi def link madeusDeclaration    Structure
hi def link madeusInclude        Include
hi def link madeusMember         StorageClass
hi def link madeusTransition     Keyword
hi def link madeusControl        Statement
hi def link madeusAction         Function
hi def link madeusAttribute      Keyword
hi def link madeusKind           Type
hi def link madeusConstant       Constant
hi def link madeusType           Type
hi def link madeusBuiltin        Function
hi def link madeusTypeName       Identifier
hi def link madeusTransitionName Function
hi def link madeusComment        Comment
hi def link madeusDuration       Number
hi def link madeusNumber         Number
hi def link madeusOperator       Operator
hi def link madeusEscape         SpecialChar
hi def link madeusBraces         SpecialChar
hi def link madeusPlaceholder    Identifier
hi def link madeusString         String
hi def link madeusTripleString   String

let b:current_syntax = "madeus"
